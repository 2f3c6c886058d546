"""Which process owns something, and whether it is still there: the owner record a search claim, a journal
lock and a training run folder carry (host, PID and the process's start time), and the test that tells a live
owner from one that is provably gone (its PID dead on this host, or reused by another process).

May import: nothing of nndiag.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where that is not known."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def record() -> dict[str, Any]:
    """This process as an owner record: host, PID and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": start_time(os.getpid())}


def alive(pid: int, started: int | None = None) -> bool:
    """Is process `pid` running on this host? A zombie (killed, not yet reaped by its parent) is not, nor a new
    process that reuses the PID of a dead one (its start time differs from `started`, where both are known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process: /proc (world-readable) says whether it is the one that started then
    except (OverflowError, ValueError):  # not a PID at all
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal said it exists
    if fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def gone(owner: dict[str, Any], host: str | None = None) -> bool:
    """Is the process of an owner record provably gone? Its PID is dead (or reused) on this host, or the record has
    no host (a claim by an older nndiag whose worker died between writing its PID and its host). A process on
    another host is not provably gone."""
    host = host or socket.gethostname()
    if owner.get("host") is None:
        return True
    if owner["host"] != host:
        return False
    try:
        return not alive(int(owner["pid"]), owner.get("started"))
    except (KeyError, TypeError, ValueError):
        return True

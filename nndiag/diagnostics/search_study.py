"""The Optuna side of `nndiag search`: one study holds every trial of a search, so several processes
(on one machine with the journal file, on many with PostgreSQL/MySQL) share the work and a re-run
resumes it.

How trials are shared without losing or repeating one:
  * A stage of N trials is N *slots* (0..N-1). Slot k's parameters are a pure function of the seed,
    the stage and k (see search.sample), so any process can (re)create it identically.
  * A process "repairs" a stage: it fails stale RUNNING trials (journal: a dead PID on this host;
    RDB: Optuna's heartbeat), then enqueues a WAITING trial for every slot that has no valid claim.
  * Claiming pops a WAITING trial (Optuna's atomic WAITING -> RUNNING). If a lower-numbered valid
    trial already holds the same slot (two processes repaired at once), the claim is discarded.
  * A claim is valid while WAITING or RUNNING, and once finished with an nndiag `status`
    (complete / diverged / failed). A FAIL without a status (a killed worker, Ctrl-C) frees its slot:
    the next repair enqueues it again with the same parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from nndiag.errors import BadInput

RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")  # URL schemes handed to Optuna's RDBStorage
HEARTBEAT_S = 10  # RDB only: a running trial records a heartbeat this often (seconds)
GRACE_S = 60  # RDB only: a RUNNING trial without a heartbeat for this long is failed and re-enqueued
UNOWNED_S = 60  # a RUNNING trial that never recorded its owner's PID for this long is stale (seconds)
FINISHED = ("complete", "diverged", "failed")  # nndiag statuses that finish a slot


def open_storage(spec: str) -> Any:
    """A journal file path, or an RDB URL (postgresql://, mysql://, sqlite:///) -> an Optuna storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower() if "://" in spec else None
    if scheme is None:
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if scheme not in RDB_SCHEMES:
        raise BadInput(
            f"unsupported storage URL scheme {scheme!r}; expected a journal file path, or postgresql://USER:PASS@HOST/DB, "
            "mysql://USER:PASS@HOST/DB or sqlite:///FILE",
            where="--storage",
        )
    spec = with_driver(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" since Optuna 2.9
            return optuna.storages.RDBStorage(spec, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except ImportError as exc:  # Optuna: "Failed to import DB access module"
        hint = (
            " (pip install 'nndiag[postgres]')" if scheme.startswith("postgres") else " (e.g. pip install pymysql and use mysql+pymysql://)"
        )
        raise BadInput(f"the database driver is not installed: {exc}{hint}", where="--storage") from None
    except Exception as exc:  # connection refused, bad credentials, unknown database
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"cannot open storage {redact(spec)}: {first}", where="--storage") from None


def with_driver(url: str) -> str:
    """postgresql:// with whichever driver is installed: SQLAlchemy 2.1 defaults to psycopg 3, the `postgres` extra ships psycopg2."""
    head, rest = url.split("://", 1)
    if head not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    raise BadInput("no PostgreSQL driver is installed: pip install 'nndiag[postgres]' (psycopg2-binary) or psycopg", where="--storage")


def redact(url: str) -> str:
    """A storage URL without its password, for messages and JSON."""
    if "://" not in url or "@" not in url:
        return url
    head, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{head}://{user}:***@{host}"


def fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _alive(pid: int) -> bool:
    """Is process `pid` running on this host? A zombie (killed, not yet reaped by its parent) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class SearchStudy:
    """One Optuna study = one search. `stage` and `slot` live in each trial's user attributes."""

    def __init__(self, storage_spec: str, name: str, direction: str, identity: str):
        import optuna

        self.optuna = optuna
        self.storage_spec = storage_spec
        self.storage = open_storage(storage_spec)
        self.host = socket.gethostname()
        try:
            self.study = optuna.create_study(storage=self.storage, study_name=name, direction=direction, load_if_exists=True)
        except Exception as exc:
            raise BadInput(f"cannot create or load study {name!r} in {redact(storage_spec)}: {exc}", where="--study") from None
        if self.study.direction.name.lower() != direction:
            raise BadInput(
                f"study {name!r} was created to {self.study.direction.name.lower()} its metric; this search wants to "
                f"{direction} it (search.metric changed). Use another --study name.",
                where="--study",
            )
        stored = self.study.user_attrs.get("nndiag_identity")
        if stored is None:
            self.study.set_user_attr("nndiag_identity", identity)
        elif stored != identity:
            raise BadInput(
                f"study {name!r} in {redact(storage_spec)} was created by a different search (the recipe, space, seed, "
                "epochs or sampling changed; only trial counts may change between runs). Use another --study name, "
                "or delete the journal to start over.",
                where="--study",
            )

    # -- reading -------------------------------------------------------------------------------

    def trials(self, stage: str) -> list[Any]:
        all_trials = self.study.get_trials(deepcopy=False)
        return [t for t in all_trials if t.user_attrs.get("stage") == stage and not t.user_attrs.get("discarded")]

    @staticmethod
    def holds_slot(trial: Any) -> bool:
        state = trial.state.name
        if state in ("WAITING", "RUNNING"):
            return True
        return trial.user_attrs.get("status") in FINISHED

    def finished(self, stage: str) -> dict[int, Any]:
        """slot -> the finished trial that holds it (lowest number wins, if ever two did)."""
        done: dict[int, Any] = {}
        for t in sorted(self.trials(stage), key=lambda t: t.number):
            if t.state.is_finished() and t.user_attrs.get("status") in FINISHED:
                done.setdefault(int(t.user_attrs["slot"]), t)
        return done

    def counts(self, stage: str, target: int) -> dict[str, int]:
        trials = self.trials(stage)
        finished = self.finished(stage)
        return {
            "target": target,
            "done": sum(1 for s in finished if s < target),
            "running": sum(1 for t in trials if t.state.name == "RUNNING"),
            "waiting": sum(1 for t in trials if t.state.name == "WAITING"),
            "lost": sum(1 for t in trials if t.state.name == "FAIL" and "status" not in t.user_attrs),
        }

    def user_attr(self, key: str) -> Any:
        return self.optuna.load_study(study_name=self.study.study_name, storage=self.storage).user_attrs.get(key)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    # -- repairing and claiming ----------------------------------------------------------------

    def fail_stale(self, stage: str) -> int:
        """Fail RUNNING trials whose worker is gone; their slots are then enqueued again."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" since Optuna 2.9, and stable in use
            self.optuna.storages.fail_stale_trials(self.study)  # RDB heartbeat; a no-op for the journal
        now = dt.datetime.now()
        failed = 0
        for t in self.trials(stage):
            if t.state != TrialState.RUNNING:
                continue
            pid, host = t.user_attrs.get("pid"), t.user_attrs.get("host")
            if pid is None:
                started = t.datetime_start.replace(tzinfo=None) if t.datetime_start else now
                stale = (now - started).total_seconds() > UNOWNED_S
            else:
                stale = host == self.host and not _alive(int(pid))
            if stale:
                try:
                    self.storage.set_trial_user_attr(t._trial_id, "lost", f"worker {host}:{pid} is gone")
                    failed += bool(self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL))
                except UpdateFinishedTrialError:
                    pass
        return failed

    def repair(self, stage: str, target: int, params_for: Callable[[int], dict[str, Any]]) -> int:
        """Enqueue a WAITING trial for every slot below `target` that nothing holds. Returns how many."""
        self.fail_stale(stage)
        held = {int(t.user_attrs["slot"]) for t in self.trials(stage) if self.holds_slot(t)}
        missing = [k for k in range(target) if k not in held]
        for slot in missing:
            self.study.enqueue_trial(params_for(slot), user_attrs={"stage": stage, "slot": slot})
        return len(missing)

    def claim(self, stage: str) -> Any | None:
        """Pop one WAITING trial of `stage` for this process, or None when there is none left."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for t in sorted(self.trials(stage), key=lambda t: t.number):
            if t.state != TrialState.WAITING:
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            slot = int(t.user_attrs["slot"])
            rivals = [u for u in self.trials(stage) if u.number < t.number and int(u.user_attrs["slot"]) == slot and self.holds_slot(u)]
            if rivals:  # another process enqueued this slot first: give ours up
                self.storage.set_trial_user_attr(t._trial_id, "discarded", f"slot {slot} is held by trial {rivals[0].number}")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                continue
            self.storage.set_trial_user_attr(t._trial_id, "pid", os.getpid())
            self.storage.set_trial_user_attr(t._trial_id, "host", self.host)
            return self.optuna.Trial(self.study, t._trial_id)
        return None

    def heartbeat(self, trial: Any) -> "Heartbeat":
        return Heartbeat(self.storage, trial._trial_id)

    def finish(self, trial: Any, record: dict[str, Any], metric: str) -> None:
        """Store a trial's outcome: COMPLETE (value = the metric), PRUNED (diverged) or FAIL (failed)."""
        from optuna.trial import TrialState

        for key, value in record.items():
            self.storage.set_trial_user_attr(trial._trial_id, key, value)
        status = record["status"]
        if status == "complete":
            self.study.tell(trial, values=float(record[metric]))
        else:
            self.study.tell(trial, state=TrialState.PRUNED if status == "diverged" else TrialState.FAIL)

    def release(self, trial: Any) -> None:
        """Give a trial up unfinished (Ctrl-C): FAIL without a status, so a re-run enqueues its slot again."""
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_user_attr(trial._trial_id, "lost", "interrupted")
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except Exception:  # the storage may be gone too; the heartbeat / PID check will catch it
            pass


class Heartbeat:
    """Records an RDB heartbeat for a running trial every HEARTBEAT_S seconds (no-op for the journal)."""

    def __init__(self, storage: Any, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if hasattr(self.storage, "record_heartbeat") and getattr(self.storage, "heartbeat_interval", None):
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

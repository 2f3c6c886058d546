"""The Optuna side of `nndiag search`: one study holds every trial of a search, so several processes
(on one machine with the journal file, on many with PostgreSQL/MySQL) share the work and a re-run
resumes it.

How trials are shared without losing or repeating one:
  * A stage of N trials is N *slots* (0..N-1). Slot k's parameters are a pure function of the seed,
    the stage and k (see search.sample), so any process can (re)create it identically.
  * A process "repairs" a stage: it fails stale RUNNING trials (journal: every process that claimed it
    is provably gone -- a dead PID on this host, or a claim without its host; RDB: Optuna's heartbeat),
    then enqueues a WAITING trial for every slot that has no valid claim.
  * Claiming is two journal appends, each whole: first the claimer's owner record (host, PID and the
    process's start time, in ONE attribute of its own, `claim:<host>:<pid>`), then Optuna's atomic
    WAITING -> RUNNING pop. A kill between them leaves a WAITING trial that anyone may claim; a kill
    after them leaves a RUNNING trial whose owner is on record, so the next repair sees it is gone. A
    claimer that lost the pop keeps its record there, alive, so the trial is stale only once every
    claimer is gone. If a lower-numbered valid trial already holds the same slot (two processes repaired
    at once), the claim is discarded.
  * The journal's file lock records its owner too (`OwnedLock`): a lock left by a process killed while
    appending is released at once when its owner is gone, not after Optuna's 30 s grace period.
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

from nndiag import processes
from nndiag.errors import BadInput

RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")  # URL schemes handed to Optuna's RDBStorage
HEARTBEAT_S = 10  # RDB only: a running trial records a heartbeat this often (seconds)
GRACE_S = 60  # RDB only: a RUNNING trial without a heartbeat for this long is failed and re-enqueued
UNOWNED_S = 60  # a RUNNING trial with no owner on record (not claimed by nndiag) for this long is stale (seconds)
LOCK_GRACE_S = 30  # a journal lock whose owner is unknown or on another host is broken after this long unchanged (Optuna's)
CLAIM = "claim:"  # user attribute prefix of a claimer's owner record: claim:<host>:<pid> -> {host, pid, started}
FINISHED = ("complete", "diverged", "failed")  # nndiag statuses that finish a slot
KILL_AT = "NNDIAG_TEST_KILL_AT"  # tests only: "claim:N" or "running:N" SIGKILLs this process at its Nth claim, after that append


def open_storage(spec: str) -> Any:
    """A journal file path, or an RDB URL (postgresql://, mysql://, sqlite:///) -> an Optuna storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower() if "://" in spec else None
    if scheme is None:
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(path), lock_obj=owned_lock(str(path)))
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


def owner_record() -> dict[str, Any]:
    """This process as a claim or a lock records it: host, PID and start time."""
    return processes.record()


def gone(record: dict[str, Any], host: str) -> bool:
    """Is the process of an owner record provably gone (nndiag.processes.gone)?"""
    return processes.gone(record, host)


def owners(trial: Any) -> list[dict[str, Any]]:
    """The owner records of every process that claimed `trial` (older journals: its `pid` and `host` attributes)."""
    attrs = trial.user_attrs
    records = [v for k, v in attrs.items() if k.startswith(CLAIM) and isinstance(v, dict) and not v.get("withdrawn")]
    if not records and attrs.get("pid") is not None:
        records = [{"pid": attrs["pid"], "host": attrs.get("host")}]
    return records


def _test_kill(point: str, count: int) -> None:
    """Fault injection for the kill test: SIGKILL this process at the `count`th claim's `point` when NNDIAG_TEST_KILL_AT says so."""
    if os.environ.get(KILL_AT) == f"{point}:{count}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def owned_lock(path: str) -> Any:
    """The journal's file lock (Optuna's JournalFileOpenLock, same lock file), which records its owner: see OwnedLock."""
    from optuna.storages.journal import JournalFileOpenLock

    class OwnedLock(JournalFileOpenLock):
        """Optuna's open-O_EXCL lock file, created whole with its owner's record inside (a hard link from a
        temporary file: the lock never exists empty). A lock whose owner is provably gone (a process killed
        while appending to the journal) is broken at once; one whose owner is unknown (an empty lock file from
        another writer) or on another host, after LOCK_GRACE_S unchanged, as Optuna does; a live owner on this
        host is waited for."""

        def __init__(self, filepath: str) -> None:
            super().__init__(filepath, grace_period=LOCK_GRACE_S)
            self.lock_path = filepath + ".lock"

        def acquire(self) -> bool:
            import time
            import uuid

            record = json.dumps(owner_record())
            mine = f"{self.lock_path}.{uuid.uuid4().hex}.owner"
            Path(mine).write_text(record)
            try:
                sleep, mtime, since = 0.001, None, time.monotonic()
                while True:
                    try:
                        os.link(mine, self.lock_path)
                        return True
                    except FileExistsError:
                        pass
                    except OSError:  # no hard links here (some network file systems): create, then fill
                        try:
                            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                        except FileExistsError:
                            pass
                        else:
                            with os.fdopen(fd, "w") as handle:
                                handle.write(record)
                            return True
                    holder = self._holder()
                    if holder is not None and gone(holder, socket.gethostname()):
                        self._break(holder)
                        continue
                    try:
                        current = os.stat(self.lock_path).st_mtime
                    except OSError:
                        continue  # released meanwhile
                    if current != mtime:
                        mtime, since = current, time.monotonic()
                    elif time.monotonic() - since > LOCK_GRACE_S and not (
                        holder is not None and holder.get("host") == socket.gethostname()
                    ):
                        self._break(holder)  # an unknown or remote holder, silent for the grace period (a live one here is waited for)
                        continue
                    time.sleep(sleep)
                    sleep = min(sleep * 2, 0.1)
            finally:
                Path(mine).unlink(missing_ok=True)

        def _holder(self, path: str | None = None) -> dict[str, Any] | None:
            try:
                record = json.loads(Path(path or self.lock_path).read_text() or "null")
            except (OSError, ValueError):
                return None
            return record if isinstance(record, dict) else None

        def _break(self, holder: dict[str, Any] | None) -> None:
            """Remove a stale lock: move it aside first, so that a lock just taken by a live process is put back."""
            import uuid

            moved = f"{self.lock_path}.{uuid.uuid4().hex}.stale"
            try:
                os.rename(self.lock_path, moved)
            except OSError:
                return  # someone else removed it
            if self._holder(moved) != holder:  # a live process took the lock between our look and the move: give it back
                try:
                    os.link(moved, self.lock_path)
                except OSError:
                    pass
            Path(moved).unlink(missing_ok=True)

        def release(self) -> None:
            import uuid

            moved = f"{self.lock_path}.{uuid.uuid4().hex}.rename"
            try:
                os.rename(self.lock_path, moved)
            except OSError:
                raise RuntimeError("Error: did not possess lock") from None
            Path(moved).unlink(missing_ok=True)

    return OwnedLock(path)


class SearchStudy:
    """One Optuna study = one search. `stage` and `slot` live in each trial's user attributes."""

    def __init__(self, storage_spec: str, name: str, direction: str, identity: str):
        import optuna

        self.optuna = optuna
        self.storage_spec = storage_spec
        self.storage = open_storage(storage_spec)
        self.host = socket.gethostname()
        self.claims = 0  # claims this process has made (NNDIAG_TEST_KILL_AT counts them)
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
            records = owners(t)
            if not records:  # RUNNING without any claim on record: not nndiag's claim; give it a while
                started = t.datetime_start.replace(tzinfo=None) if t.datetime_start else now
                stale = (now - started).total_seconds() > UNOWNED_S
            else:
                stale = all(gone(r, self.host) for r in records)
            if stale:
                who = ", ".join(f"{r.get('host')}:{r.get('pid')}" for r in records) or "unknown"
                try:
                    self.storage.set_trial_user_attr(t._trial_id, "lost", f"worker {who} is gone")
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
            self.claims += 1
            record = owner_record()  # one append: host, PID and start time together, before the trial is RUNNING
            try:
                self.storage.set_trial_user_attr(t._trial_id, f"{CLAIM}{record['host']}:{record['pid']}", record)
            except UpdateFinishedTrialError:
                continue
            _test_kill("claim", self.claims)
            try:
                popped = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
            except UpdateFinishedTrialError:
                popped = False
            if not popped:  # another process popped it first: take our claim back, so that the trial is stale when ITS
                self._withdraw(t, record)  # owner dies (a live loser's record would otherwise hold it for ever)
                continue
            _test_kill("running", self.claims)
            slot = int(t.user_attrs["slot"])
            rivals = [u for u in self.trials(stage) if u.number < t.number and int(u.user_attrs["slot"]) == slot and self.holds_slot(u)]
            if rivals:  # another process enqueued this slot first: give ours up
                self.storage.set_trial_user_attr(t._trial_id, "discarded", f"slot {slot} is held by trial {rivals[0].number}")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                continue
            return self.optuna.Trial(self.study, t._trial_id)
        return None

    def _withdraw(self, trial: Any, record: dict[str, Any]) -> None:
        """Mark this process's claim on `trial` withdrawn (owners() skips it); nothing to do once the trial finished."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(trial._trial_id, f"{CLAIM}{record['host']}:{record['pid']}", {**record, "withdrawn": True})
        except UpdateFinishedTrialError:
            pass

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

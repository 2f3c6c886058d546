"""`nndiag search` after any kill: SIGKILL at the claim and in the middle of a trial, then a resume that ends at the
same best as an uninterrupted run with the same seed; stale claims and stale journal locks; Ctrl-C with workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.diagnostics import search_study

SLOW = '''
import os
import time
from pathlib import Path

from torch import nn


class Slow(nn.Module):
    """The spiral MLP. When SLOW_AT is set, its SLOW_AT-th training forward pass in this process writes SLOW_MARK
    and sleeps: the kill test SIGKILLs the process there, in the middle of a trial."""

    calls = 0

    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        if self.training and os.environ.get("SLOW_AT"):
            Slow.calls += 1
            if Slow.calls == int(os.environ["SLOW_AT"]):
                Path(os.environ["SLOW_MARK"]).write_text(str(os.getpid()))
                time.sleep(120)
        return self.net(x)
'''

SPACE = {
    "optim.lr": {"low": 1.0e-4, "high": 1.0, "log": True},
    "optim.weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
}
COMPARED = ["stage", "slot", "optim.lr", "optim.weight_decay", "val_acc", "val_loss", "train_loss", "epochs_run", "status"]
BATCHES = 5  # training batches per epoch: 144 training points of the spiral (80% of 3 x 60) in batches of 32


def recipe(tmp_path: Path) -> dict:
    (tmp_path / "slow.py").write_text(SLOW)
    base = recipe_dict(SPIRAL_MLP, **{"data.args.points_per_class": 60, "model": {"target": "slow:Slow"}, "train.epochs": 1})
    base["search"] = {"space": SPACE, "coarse": {"trials": 6, "epochs": 1}, "fine": {"trials": 2, "epochs": 1}, "top_k": 2}
    return base


def search(path: Path, out: Path, **env: str) -> subprocess.Popen:
    """`nndiag search` in its own process (and process group), as a user runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "nndiag", "search", str(path), "--out", str(out), "--json", "--no-plots"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def trials(out: Path) -> list:
    """The study's trials; none while the journal exists but holds no study yet (a search that is just starting)."""
    import optuna

    storage = search_study.open_storage(str(out / "search-journal.log"))
    try:
        return optuna.load_study(study_name="spiral-mlp", storage=storage).get_trials(deepcopy=False)
    except KeyError:  # Optuna's "Record does not exist": the study is not in the journal yet
        return []


def state(t) -> str:
    return t.state.name


def test_sigkill_at_the_claim_and_mid_trial_then_resume_gives_the_same_best(cli, write_recipe, tmp_path):
    path = write_recipe(recipe(tmp_path))
    clean = cli("search", path, "--out", tmp_path / "clean", "--json", "--no-plots")
    assert clean.exit_code == 0, clean.output
    expected = json.loads(clean.stdout)["metrics"]
    killed = tmp_path / "killed"

    # 1. killed between its claim record and the WAITING -> RUNNING pop of its 2nd trial: that trial stays WAITING
    a = search(path, killed, NNDIAG_TEST_KILL_AT="claim:2")
    a.communicate(timeout=120)
    assert a.returncode == -signal.SIGKILL
    held = [t for t in trials(killed) if f"claim:{socket.gethostname()}:{a.pid}" in t.user_attrs and state(t) != "COMPLETE"]
    assert [state(t) for t in held] == ["WAITING"]

    # 2. killed right after the pop of its 2nd trial: RUNNING, with its owner (host and PID) on record in one attribute
    b = search(path, killed, NNDIAG_TEST_KILL_AT="running:2")
    b.communicate(timeout=120)
    assert b.returncode == -signal.SIGKILL
    running = [t for t in trials(killed) if state(t) == "RUNNING"]
    assert len(running) == 1 and [r["pid"] for r in search_study.owners(running[0])] == [b.pid]

    # 3. a real SIGKILL in the middle of a trial: the 3rd batch of the 2nd trial this process trains
    mark = tmp_path / "in-trial"
    c = search(path, killed, SLOW_AT=str(BATCHES + 3), SLOW_MARK=str(mark))
    deadline = time.time() + 120
    while not mark.exists() and c.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert mark.exists(), c.communicate()[1]
    os.kill(c.pid, signal.SIGKILL)
    c.communicate(timeout=30)
    after = trials(killed)
    running, lost = [t for t in after if state(t) == "RUNNING"], [t for t in after if "lost" in t.user_attrs]
    assert len(running) == 1 and [r["pid"] for r in search_study.owners(running[0])] == [c.pid]
    assert [r["pid"] for t in lost for r in search_study.owners(t)] == [b.pid]  # its start failed b's trial: gone

    # 4. the same command again: every slot once, the same numbers, the same best
    resumed = cli("search", path, "--out", killed, "--json", "--no-plots")
    assert resumed.exit_code == 0, resumed.output
    got = json.loads(resumed.stdout)["metrics"]
    assert got["best_params"] == expected["best_params"] and got["best_val_acc"] == expected["best_val_acc"]
    assert got["fine_space"] == expected["fine_space"]
    assert got["duplicates"] == 0 and got["trials_rerun"] == 2  # the two trials left RUNNING by dead processes
    table, reference = pd.read_csv(killed / "search.csv"), pd.read_csv(tmp_path / "clean" / "search.csv")
    pd.testing.assert_frame_equal(table[COMPARED], reference[COMPARED])


def test_a_claim_with_a_pid_and_no_host_is_stale_at_once(cli, write_recipe, tmp_path):
    """An older nndiag wrote `pid` and `host` as two appends; a kill between them left a RUNNING trial with a PID and no
    host, which held its slot for ever (a resume waited for it). Now such a claim is provably gone."""
    import optuna
    from optuna.trial import TrialState

    path, out = write_recipe(recipe(tmp_path)), tmp_path / "o"
    assert cli("search", path, "--stages", "coarse", "--trials", "2", "--out", out, "--json").exit_code == 0
    study = optuna.load_study(study_name="spiral-mlp", storage=search_study.open_storage(str(out / "search-journal.log")))
    study.enqueue_trial({"optim.lr": 1e-2, "optim.weight_decay": 1e-5}, user_attrs={"stage": "coarse", "slot": 2})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    study._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    study._storage.set_trial_user_attr(waiting._trial_id, "pid", os.getpid())  # alive, but no host: the claim never finished
    done = [None]
    worker = threading.Thread(target=lambda: done.__setitem__(0, cli("search", path, "--stages", "coarse", "--trials", "3", "--out", out)))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the resume waited for a claim that can never finish"
    assert done[0].exit_code == 0, done[0].output
    lost = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(lost) == 1 and "gone" in lost[0].user_attrs["lost"]


def test_a_live_claimer_keeps_its_trial(tmp_path):
    """Stale means provably gone: a claim by this (live) process, or by a process on another host, is not stale."""
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert search_study.gone({"host": host, "pid": dead.pid}, host)
    assert search_study.gone({"host": None, "pid": os.getpid()}, host)
    assert not search_study.gone(search_study.owner_record(), host)
    assert not search_study.gone({"host": "elsewhere", "pid": dead.pid}, host)
    reused = {**search_study.owner_record(), "started": -1}  # this PID, but another process's start time: the PID was reused
    assert search_study.gone(reused, host)


def test_a_stale_journal_lock_is_released_at_once(tmp_path, monkeypatch):
    """A process killed while appending leaves the journal's lock file; Optuna waits 30 s before breaking it. A lock
    whose owner is provably gone is broken at once; a live owner's lock is waited for."""
    journal = tmp_path / "search-journal.log"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file = Path(str(journal) + ".lock")
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": None}))
    lock = search_study.owned_lock(str(journal))
    got = threading.Event()
    taker = threading.Thread(target=lambda: (lock.acquire(), got.set()), daemon=True)
    taker.start()
    assert got.wait(timeout=10), "a lock whose owner is dead was not broken"
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()  # the lock file names its owner
    other = search_study.owned_lock(str(journal))
    waited = threading.Event()
    waiter = threading.Thread(target=lambda: (other.acquire(), waited.set()), daemon=True)
    waiter.start()
    assert not waited.wait(timeout=1.0)  # a live owner's lock is not broken
    monkeypatch.setattr(search_study, "LOCK_GRACE_S", 0.2)
    assert not waited.wait(timeout=1.5)  # ... not even after the grace period a silent unknown or remote holder gets
    lock.release()
    assert waited.wait(timeout=10)
    other.release()
    assert not lock_file.exists() and not list(tmp_path.glob("*.owner"))


def test_a_search_resumes_past_a_stale_lock_without_a_stall(cli, write_recipe, tmp_path):
    path, out = write_recipe(recipe(tmp_path)), tmp_path / "o"
    assert cli("search", path, "--stages", "coarse", "--trials", "1", "--out", out, "--json").exit_code == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(str(out / "search-journal.log") + ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    done = [None]
    worker = threading.Thread(target=lambda: done.__setitem__(0, cli("search", path, "--stages", "coarse", "--trials", "2", "--out", out)))
    worker.start()
    worker.join(timeout=25)  # Optuna alone breaks the lock after 30 s
    assert not worker.is_alive() and done[0].exit_code == 0


def interrupt(args: list[str], out: Path, path: Path) -> tuple[int, str]:
    """Start `nndiag search`, wait until a trial is training (the Slow model's SLOW_AT-th training forward writes its
    mark and sleeps there, in the middle of a trial, however busy the machine), then Ctrl-C it as a terminal does
    (SIGINT to the whole process group, and a second one just after, as an impatient user types): exit code and stderr."""
    mark = out.parent / f"{out.name}.mark"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nndiag", "search", str(path), "--out", str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "SLOW_AT": str(BATCHES + 3), "SLOW_MARK": str(mark)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal: a test run in the background
    )  # (`cmd &` in a script) inherits SIGINT ignored, and Python then keeps ignoring it
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not mark.exists():
        time.sleep(0.05)
    assert mark.exists(), "no trial reached its slow batch"
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the search did not end within 60 s of Ctrl-C; its stderr:\n{proc.communicate()[1]}") from None
    return code, proc.communicate()[1]


def test_ctrl_c_ends_a_search_with_one_clean_line(write_recipe, tmp_path):
    path = write_recipe(recipe(tmp_path))  # the Slow model holds a trial in its middle until the Ctrl-C
    for args in (["--workers", "2"], []):
        out = tmp_path / f"o{len(args)}"
        code, err = interrupt(args, out, path)
        assert code == 130, err
        assert err.count("interrupted") == 1 and "Traceback" not in err and "Exception ignored" not in err, err
        # every trial was handed back, but one claimed in the very instant of the Ctrl-C, before its run began: that one's
        # owner is gone, so it is stale and a resume runs it again at once (the kill test above resumes such a study)
        running = [t for t in trials(out) if state(t) == "RUNNING"]
        assert len(running) <= 1 and all(all(search_study.gone(r) for r in search_study.owners(t)) for t in running), running


def test_a_claim_lost_to_a_rival_is_withdrawn_so_the_rivals_death_frees_the_trial(tmp_path, monkeypatch):
    """Two processes claim the same WAITING trial; the rival pops it and is then killed. The loser, alive and waiting for
    the search to end, must not keep the trial RUNNING for ever with its own claim record: it takes the record back when
    it loses the pop, so the trial is stale (its one claimer is gone) and runs again."""
    from optuna.trial import TrialState

    study = search_study.SearchStudy(str(tmp_path / "journal.log"), "race", "maximize", "identity")
    study.repair("coarse", 1, lambda slot: {"lr": 0.1})
    (waiting,) = study.trials("coarse")
    rival = subprocess.Popen([sys.executable, "-c", "pass"])
    rival.wait()  # a process that existed and is gone: the killed rival
    dead = {"host": socket.gethostname(), "pid": rival.pid, "started": 0}
    study.storage.set_trial_user_attr(waiting._trial_id, f"{search_study.CLAIM}{dead['host']}:{dead['pid']}", dead)
    popped = study.storage.set_trial_state_values

    def rival_pops_first(trial_id, state, values=None):  # the rival's pop lands between our claim and our pop
        popped(trial_id, state, values)
        return False

    monkeypatch.setattr(study.storage, "set_trial_state_values", rival_pops_first)
    assert study.claim("coarse") is None  # we lost the race
    monkeypatch.undo()
    (running,) = study.trials("coarse")
    assert running.state == TrialState.RUNNING and [r["pid"] for r in search_study.owners(running)] == [rival.pid]
    assert study.fail_stale("coarse") == 1  # the rival is gone and our withdrawn claim holds nothing
    study.repair("coarse", 1, lambda slot: {"lr": 0.1})
    assert study.claim("coarse") is not None  # the slot runs again


def test_a_pid_reused_by_another_users_process_is_gone(monkeypatch):
    """os.kill(pid, 0) raises PermissionError for another user's process: the PID exists, but /proc's start time still
    tells whether it is the process that made the record."""
    from nndiag import processes

    def not_yours(pid, signal):
        raise PermissionError

    record = processes.record()
    monkeypatch.setattr(processes.os, "kill", not_yours)
    assert processes.alive(record["pid"], record["started"])  # the same process: alive
    assert not processes.alive(record["pid"], -1)  # another process under the same PID: the record's owner is gone


@pytest.mark.parametrize(
    "codes, raised",
    [([130, 130], KeyboardInterrupt), ([130, 0], None), ([-2, 1], KeyboardInterrupt), ([2, 2], "BadInput"), ([3, -9], RuntimeError)],
)
def test_how_workers_that_all_ended_badly_end_the_search(codes, raised):
    """Ctrl-C reaches the workers (one process group) before this process sees it: an interrupt (exit 130), not a crash;
    workers that all refused the input: bad input (exit 2); crashed or killed (the OOM killer): a crash (exit 3)."""
    from nndiag.diagnostics import search
    from nndiag.errors import BadInput

    class Ended:
        def __init__(self, code: int):
            self.returncode = code

        def poll(self) -> int:
            return self.returncode

        def wait(self, timeout: float | None = None) -> int:
            return self.returncode

        def send_signal(self, signal: int) -> None:
            raise AssertionError("a worker that has ended is not signalled")

    procs = [Ended(c) for c in codes]
    if raised is None:
        search.wait_workers(None, procs, None)  # one worker finished: the search goes on in this process
        return
    with pytest.raises(BadInput if raised == "BadInput" else raised):
        search.wait_workers(None, procs, None)

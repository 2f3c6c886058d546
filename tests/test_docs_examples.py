"""Every shell and Python example in README.md and docs/ runs, or says why it cannot run offline.

A fenced ```bash, ```console, ```sh or ```python block must follow, on the line right above its fence,
one marker:

    <!-- run -->                               run it; it must exit 0
    <!-- run: exit=1 json=status,metrics.ratio files=runs/*/check-loss-*/summary.json contains="initial-loss-high" setup=spiral-x20 -->
    <!-- file: my_code.py -->                  not run: written to the page's folder for the blocks after it (any language)
    <!-- by: tests/test_integrations_lightning.py -->   run by that test, which reads this page
    <!-- not-run: needs a torchvision download -->      not runnable offline (the reason is shown to nobody but us)

Blocks of one page run in order in one temporary folder (files written by one block are there for the
next), with `recipes/`, `docs/` and `tests/` of the repository reachable as they are in a clone, `NNDIAG_RUNS`
inside the folder and no GPU visible (device=auto is the CPU). A shell block runs as
`bash -e -o pipefail`; a ```console block runs its `$ ` lines and shows their real output. Options:
`exit` the block's exit code (default 0); `json` dotted keys the JSON on stdout must have (the last line of
stdout: the last command's `--json`); `files` globs that must match in the folder afterwards; `contains`
text its output must contain (stdout and stderr); `setup` a named preparation below, run first.

Speed: `nndiag` on the blocks' PATH hands each command to a fork server that has torch imported
already (tests/docs_server.py): every command is still a real process with its own pipes and exit code.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN_LANGUAGES = ("bash", "console", "sh", "shell", "python")
FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"^<!-- (run|file|by|not-run)(?::\s*(.*?))?\s*-->$")
SERVER = Path(__file__).resolve().parent / "docs_server.py"
SOCKET: str | None = None  # the fork server's socket while the tests run (see the `server` fixture)


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    kind: str | None  # run | file | by | not-run | None (no marker)
    options: dict[str, str] = field(default_factory=dict)
    argument: str = ""  # file: the path; by: the test file; not-run: the reason

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        above = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip() if m.start() else ""
        marker = MARKER.match(above) if text[: m.start()].endswith("\n") and not text[: m.start()].endswith("\n\n") else None
        kind, body = (marker.group(1), marker.group(2) or "") if marker else (None, "")
        options: dict[str, str] = {}
        if kind == "run" and body:
            for token in shlex.split(body):
                key, _, value = token.partition("=")
                options[key] = value
        found.append(Block(page, line, m.group(1).lower(), m.group(2), kind, options, body if kind in ("file", "by", "not-run") else ""))
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


def test_the_docs_have_examples():
    assert len(PAGES) > 10 and sum(b.kind == "run" for b in ALL_BLOCKS) >= 30


def test_every_shell_and_python_block_is_marked():
    unmarked = [b.where for b in ALL_BLOCKS if b.language in RUN_LANGUAGES and b.kind is None]
    assert not unmarked, f"blocks without a <!-- run / file / by / not-run --> marker right above their fence: {unmarked}"
    for b in ALL_BLOCKS:
        if b.kind == "not-run":
            assert b.argument, f"{b.where}: say why it cannot run offline: <!-- not-run: reason -->"
        if b.kind == "run":
            assert set(b.options) <= {"exit", "json", "files", "contains", "setup"}, f"{b.where}: unknown option in {b.options}"
            assert b.language in RUN_LANGUAGES, f"{b.where}: a ```{b.language} block cannot run"
            assert b.options.get("setup", "x") in SETUPS, f"{b.where}: no setup named {b.options['setup']!r}; known: {', '.join(SETUPS)}"


def test_blocks_run_by_other_tests_are_read_by_them():
    for b in ALL_BLOCKS:
        if b.kind == "by":
            test = REPO / b.argument
            assert test.is_file(), f"{b.where}: {b.argument} does not exist"
            assert str(b.page.relative_to(REPO)) in test.read_text(), f"{b.where}: {b.argument} does not read {b.page.relative_to(REPO)}"


# -- running a page's blocks ------------------------------------------------------------------------------


def _bin(folder: Path) -> Path:
    """`nndiag` and `python` as a user of this checkout has them: this interpreter and this repository's code
    (`nndiag` through the fork server when it runs, else `python -m nndiag`)."""
    bin_dir = folder / ".bin"
    if bin_dir.is_dir():
        return bin_dir
    bin_dir.mkdir()
    nndiag = (
        f'if [ -n "$NNDIAG_DOCS_SERVER" ]; then exec "{sys.executable}" -E -s "{SERVER}" "$@"; fi\nexec "{sys.executable}" -m nndiag "$@"'
    )
    for name, command in (("nndiag", nndiag), ("python", f'exec "{sys.executable}" "$@"'), ("python3", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{command}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNDIAG_")}
    env.update(
        PATH=f"{_bin(folder)}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        NNDIAG_RUNS=str(folder / "runs"),
        CUDA_VISIBLE_DEVICES="",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        COLUMNS="100",
        TERM="dumb",
    )
    env.pop("NNDIAG_DOCS_SERVER", None)
    if SOCKET:
        env["NNDIAG_DOCS_SERVER"] = SOCKET
    return env


def _commands(block: Block) -> list[str]:
    """The block's shell commands: continuation lines joined, comments and (console) output lines dropped."""
    lines = block.code.replace("\\\n", " ").splitlines()
    if block.language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Outcome:
    exit: int
    stdout: str
    stderr: str


def _run(block: Block, folder: Path) -> Outcome:
    if block.language == "python":
        script = folder / f".block-{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, "-E", "-s", str(SERVER), "--script", str(script)] if SOCKET else [sys.executable, str(script)]
        done = subprocess.run(argv, cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=600)
        return Outcome(done.returncode, done.stdout, done.stderr)
    script = "\n".join(_commands(block)) + "\n"
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=600
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def _has_key(obj: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


def check(block: Block, outcome: Outcome, folder: Path) -> None:
    shown = f"{block.where}\n--- stdout\n{outcome.stdout[-3000:]}\n--- stderr\n{outcome.stderr[-3000:]}"
    assert outcome.exit == int(block.options.get("exit", 0)), f"exit {outcome.exit}, expected {block.options.get('exit', 0)}: {shown}"
    if block.options.get("json"):
        lines = outcome.stdout.strip().splitlines()
        try:  # the last command's --json: one JSON document on its last line (or the whole stdout)
            verdict = json.loads(lines[-1] if lines and lines[-1].startswith("{") else outcome.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"stdout does not end with a JSON document: {shown}")
        for key in block.options["json"].split(","):
            assert _has_key(verdict, key), f"JSON key {key} missing: {shown}"
    for pattern in filter(None, block.options.get("files", "").split(",")):
        assert glob.glob(str(folder / pattern)), f"no file matches {pattern}: {shown}"
    if block.options.get("contains"):
        text = " ".join((outcome.stdout + outcome.stderr).split())
        assert " ".join(block.options["contains"].split()) in text, f"{block.options['contains']!r} not in the output: {shown}"


# -- named preparations (what a page says in prose: "with a recipe my.yaml", "a run folder of train") -------

SETUPS: dict[str, str] = {
    "x": "",
    # my.yaml and recipe.yaml: working recipes of your own (nndiag init --with-targets), as the pages assume
    "my-recipe": "nndiag init my.yaml --with-targets >/dev/null && nndiag init recipe.yaml >/dev/null",
    # logs as users have them: a train run, Lightning CSVLogger versions, a TensorBoard folder (all from the
    # calibration corpus tests/data/curves/), a/metrics.csv and b/metrics.csv, and history.csv (Keras names)
    "logs": "nndiag train recipes/quickstart.yaml --max-steps 60 --no-plots >/dev/null; python .csv_logs.py; "
    f"mkdir -p lightning_logs/version_0 lightning_logs/version_1 tb/Nov23_12-00-00_host; C={REPO}/tests/data/curves; "
    "cp $C/c-healthy-digits-mlp/metrics.csv lightning_logs/version_0/; cp $C/c-overfit-tiny-mnist1d/metrics.csv lightning_logs/version_1/; "
    "cp $C/t-lr-low-sgd-digits/events.out.tfevents.* tb/Nov23_12-00-00_host/",
    # verdicts check-loss.json (a failing one: last layer x20 on the spiral) and overfit.json, as the CI page uses them
    "verdicts": "nndiag check-loss recipes/spiral-mlp.yaml --set model.args.init=normal --set model.args.init_std=3 --json > check-loss.json || true; "
    "nndiag overfit-small recipes/quickstart.yaml --steps 300 --json > overfit.json || true",
}

CSV_LOGS = """
import math, os, csv
for run, k in (("a", 0.02), ("b", 0.05)):
    os.makedirs(run, exist_ok=True)
    with open(f"{run}/metrics.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["epoch", "step", "train_loss", "val_loss", "val_acc"])
        for s in range(1, 301):
            w.writerow([s // 30, s, 2.3 * math.exp(-k * s) + 0.05, "", ""])
            if s % 30 == 0:
                w.writerow([s // 30 - 1, s, "", 2.3 * math.exp(-k * s) + 0.1, min(0.99, 1 - math.exp(-k * s))])
with open("history.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy"])
    for e in range(20):
        w.writerow([e, 2.3 * math.exp(-0.3 * e) + 0.05, 1 - math.exp(-0.3 * e), 2.3 * math.exp(-0.3 * e) + 0.1, 0.95 * (1 - math.exp(-0.3 * e))])
"""


def _setup(name: str, folder: Path) -> None:
    """Run a named preparation in the page's folder, once per folder."""
    done_marker = folder / f".setup-{name}"
    if name == "x" or done_marker.exists():
        return
    done_marker.touch()
    (folder / ".csv_logs.py").write_text(CSV_LOGS)
    done = subprocess.run(["bash", "-c", SETUPS[name]], cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"setup {name} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "page"
    folder.mkdir()
    for name in ("recipes", "docs", "tests"):  # what a clone has beside the commands (tests/data/curves: real logs)
        (folder / name).symlink_to(REPO / name)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fork server behind `nndiag` for this module's examples."""
    global SOCKET
    path = str(tmp_path_factory.mktemp("docs-server") / "socket")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    process = subprocess.Popen([sys.executable, str(SERVER), "--serve", path], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready", "the docs' fork server did not start"
    SOCKET = path
    yield path
    SOCKET = None
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.kind in ("run", "file") for b in blocks(p))], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_examples_of_a_page_run(page: Path, tmp_path: Path, server: str) -> None:
    folder = _folder(tmp_path)
    without_jq = []  # .ci/run installs jq; where it cannot, the blocks that pipe into it are left out (and said so)
    for block in blocks(page):
        if block.kind == "file":
            target = folder / block.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.kind == "run":
            if shutil.which("jq") is None and re.search(r"(^|[|\s])jq ", block.code):
                without_jq.append(block.where)
                continue
            _setup(block.options.get("setup", "x"), folder)
            check(block, _run(block, folder), folder)
    if without_jq:
        pytest.skip(f"jq is not installed: not run: {', '.join(without_jq)} (every other block of the page passed)")

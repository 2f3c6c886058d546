"""A seeded fuzz of recipes: 400 mutations of real recipes (values of every type in every key, deleted and unknown
keys, and damaged YAML text: cut short, stray characters, duplicated or re-indented lines, alias bombs, deep
nesting) through `nndiag validate --no-build`, and a smaller set of value mutations through real commands that
build the model and run (`check-loss`, `validate`). None may crash (exit 3 or an exception out of the CLI), print a
traceback, or run longer than 60 s; bad input is exit 2 with one short paragraph."""

from __future__ import annotations

import contextlib
import copy
import random
import signal
from typing import Any, Iterator

import pytest
import yaml
from conftest import REPO, SPIRAL_MLP, recipe_dict

MUTANTS = 400  # recipes through `validate --no-build`
REAL = 16  # recipes through commands that build and run
LIMIT_S = 60  # no case may take longer
SEED = 21

SEARCHED = recipe_dict(
    SPIRAL_MLP,
    **{"data.args.points_per_class": 30, "model.args.hidden": [8], "train.epochs": 1},
    search={"space": {"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True}}, "coarse": {"trials": 2, "epochs": 1}},
)
BASES = [SEARCHED] + [yaml.safe_load(p.read_text()) for p in sorted((REPO / "recipes").glob("*.yaml"))]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**70, -(2**70), 1e30, -1e30, float("nan"), float("inf"), 0.5, -0.5, 1e-30,
    "", "x" * 500, "abc", "1e-3", "auto", "cpu", "cuda:99", "mps", "sgd", "none", "module:attr", "nope:nothing", ":",
    [], [1, 2], [True], ["a", None], {}, {"a": 1}, {"low": 1, "high": 0}, deep(150), [[[]]], {"name": {"name": {}}},
]  # fmt: skip
MODERATE: list[Any] = [None, True, False, 0, -1, 1, 3, 2**70, 1e30, float("nan"), 0.5, "", "x" * 300, "abc", [], [1, 2], {}, {"a": 1}]
SAFE_KEYS = [  # keys a real command may get any MODERATE value in without being asked for huge work
    "seed", "device", "precision", "loss", "optim.name", "optim.lr", "optim.momentum", "optim.weight_decay", "optim.betas",
    "optim.nesterov", "optim.eps", "schedule", "train.batch_size", "train.grad_clip", "model.args.activation",
    "model.args.init", "model.args.init_std", "model.args.dropout", "model.args.batchnorm", "model.args.bias", "name",
    "data.val_fraction", "data.normalize", "train.eval_batch_size", "loss.label_smoothing", "step", "model.name",
]  # fmt: skip
CHARS = [
    ":",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "*b",
    "\t",
    "\x00",
    "'",
    '"',
    "- ",
    "#",
    ",",
    "!!python/object:os.system",
    "%",
    "\n  ",
    "\xff",
    "? ",
]


def paths(node: Any, prefix: str = "") -> list[str]:
    """Every key path in a recipe (dotted), mappings and leaves alike."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found.append(path)
            found += paths(value, path)
    return found


def set_at(raw: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def delete_at(raw: dict, path: str) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def dump(raw: Any) -> str:
    try:
        return yaml.safe_dump(raw, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError):
        return yaml.safe_dump({"name": "unprintable"})


def mutate_data(raw: dict, rng: random.Random) -> str:
    keys = paths(raw)
    kind = rng.choice(["value", "value", "value", "delete", "unknown", "typo", "section"])
    key = rng.choice(keys) if keys else "name"
    if kind == "value":
        set_at(raw, key, copy.deepcopy(rng.choice(VALUES)))
    elif kind == "delete":
        delete_at(raw, key)
    elif kind == "unknown":
        set_at(raw, f"{key.rsplit('.', 1)[0]}.surprise" if "." in key else "surprise", rng.choice(VALUES[:8]))
    elif kind == "typo":
        *parents, leaf = key.split(".")
        value = copy.deepcopy(raw)
        for part in parents + [leaf]:
            value = value.get(part) if isinstance(value, dict) else None
        delete_at(raw, key)
        set_at(raw, ".".join([*parents, leaf[:-1] + leaf[-1].upper()]), value)
    else:
        set_at(raw, rng.choice(["data", "model", "optim", "train", "search", "search.space", "loss"]), rng.choice(VALUES))
    return dump(raw)


def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    kind = rng.choice(["cut", "chars", "duplicate", "delete", "indent", "bomb", "nest", "tab"])
    i = rng.randrange(max(1, len(lines)))
    if kind == "cut":
        return text[: rng.randrange(len(text) + 1)]
    if kind == "chars":
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(CHARS) + text[at:]
    if kind == "duplicate" and lines:
        return "".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :])
    if kind == "delete" and lines:
        return "".join(lines[:i] + lines[i + 1 :])
    if kind == "indent" and lines:
        return "".join(lines[:i] + [" " * rng.choice([1, 2, 3, 4]) + lines[i]] + lines[i + 1 :])
    if kind == "bomb":
        bomb = (
            "{"
            + ", ".join([f"l0: &l0 [{', '.join(['lol'] * 9)}]"] + [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 9)])
            + "}"
        )
        return text.replace("model:\n", f"model:\n  bomb: {bomb}\n", 1) if "model:\n" in text else text + f"bomb: {bomb}\n"
    if kind == "nest":
        depth = rng.choice([50, 99, 101, 500, 5000])
        return text + "extra: " + "[" * depth + "]" * depth + "\n"
    return text.replace("  ", "\t", 1)


def mutants() -> list[str]:
    rng = random.Random(SEED)
    texts = []
    for _ in range(MUTANTS):
        raw = copy.deepcopy(rng.choice(BASES))
        text = mutate_data(raw, rng) if rng.random() < 0.55 else mutate_text(dump(raw), rng)
        if rng.random() < 0.2:  # and sometimes a second mutation on top
            text = mutate_text(text, rng)
        texts.append(text)
    return texts


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """A case that runs past `seconds` raises TimeoutError (SIGALRM: the tests run in the main thread)."""

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a mutated recipe ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli_runner(monkeypatch: pytest.MonkeyPatch) -> Any:
    """invoke(args) -> the in-process CLI's result, exceptions caught and kept in result.exception. The Typer app is
    turned into its command once (Typer's CliRunner rebuilds it on every call: most of the time of a case)."""
    import typer.testing
    from typer.testing import CliRunner

    from nndiag.cli import app

    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _: command)
    runner = CliRunner()
    return lambda args: runner.invoke(app, args)


def run_case(invoke: Any, args: list[str]) -> Any:
    with time_limit(LIMIT_S):
        return invoke(args)


def check(result: Any, text: str, allowed: tuple[int, ...]) -> None:
    shown = text if len(text) < 600 else text[:600] + "..."
    crash = result.exception if not isinstance(result.exception, SystemExit) else None
    assert crash is None, f"{type(crash).__name__}: {crash}\n--- recipe:\n{shown}"
    assert result.exit_code in allowed, f"exit {result.exit_code}\n{result.output[-800:]}\n--- recipe:\n{shown}"
    assert "Traceback" not in result.output, result.output[-2000:]
    if result.exit_code == 2:
        message = result.stderr.strip()
        assert message.startswith("error:") and len(message) < 2500, message[:800]


def test_the_generator_covers_what_it_says():
    texts = mutants()
    assert len(texts) >= 300 and len(set(texts)) >= 0.9 * len(texts)
    assert sum("lol" in t for t in texts) >= 5 and sum("[[[[[[" in t for t in texts) >= 5


def test_mutated_recipes_never_crash_validate(tmp_path, monkeypatch):
    runner = cli_runner(monkeypatch)
    codes = {0: 0, 2: 0}
    for i, text in enumerate(mutants()):
        path = tmp_path / f"mutant-{i}.yaml"
        path.write_text(text, encoding="utf-8")
        result = run_case(runner, ["validate", str(path), "--no-build"])
        check(result, text, (0, 2))
        codes[result.exit_code] += 1
    print(f"validate --no-build on {MUTANTS} mutants: {codes}")
    assert codes[2] >= 0.5 * MUTANTS and codes[0] >= 20, codes  # most mutants are bad input; some are still valid recipes


@pytest.mark.parametrize("command", ["check-loss", "validate"])
def test_value_mutations_never_crash_a_real_command(command, tmp_path, monkeypatch):
    """The value mutations that keep the amount of work small (no giant data or model), through commands that build
    the data and the model and (check-loss) run on them."""
    monkeypatch.chdir(tmp_path)
    runner = cli_runner(monkeypatch)
    rng = random.Random(SEED + (command == "validate"))
    base = recipe_dict(SEARCHED, **{"data.args.points_per_class": 20})
    for i in range(REAL // 2):
        raw = copy.deepcopy(base)
        for _ in range(rng.choice([1, 2])):
            set_at(raw, rng.choice(SAFE_KEYS), copy.deepcopy(rng.choice(MODERATE)))
        text = dump(raw)
        path = tmp_path / f"real-{i}.yaml"
        path.write_text(text)
        args = [command, str(path)] + (["--json", "--no-plots", "--out", str(tmp_path / f"out-{i}")] if command == "check-loss" else [])
        check(run_case(runner, args), text, (0, 1, 2))

"""Bad input a user's bad day brings: each is exit 2 with one clear paragraph naming the key or file, no traceback,
and nothing written. And code of the user's that tries to end the program is never a silent exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.config.recipe import MAX_DEPTH, MAX_VALUES, load_recipe
from nndiag.errors import BadInput, CodeExited

SMALL = recipe_dict(SPIRAL_MLP, **{"data.args.points_per_class": 30, "model.args.hidden": [8], "train.epochs": 1})
SPACE = {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}


def text_of(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def bad(result, *phrases):
    """Exit 2, one paragraph on stderr that says each phrase, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "Traceback" not in result.output and result.stdout == ""
    assert len(message.splitlines()) <= 3 and len(message) < 2500, message[:500]  # one paragraph (wrapped at most)
    for phrase in phrases:
        assert phrase in message, message
    return message


def nothing_written(tmp_path):
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))


def laughs(levels: int, width: int = 9) -> str:
    """A YAML alias bomb: `levels` anchors, each a list of `width` aliases of the one before (width**levels values)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "{" + ", ".join(lines) + "}"


# -- YAML that would hang or crash a reader ---------------------------------------------------------


def test_deeply_nested_yaml_is_refused_without_a_recursion_error(cli, write_recipe, tmp_path):
    deep = text_of(SMALL) + "extra: " + "[" * 5000 + "]" * 5000 + "\n"
    message = bad(cli("check-loss", write_recipe(deep)), "recipe.yaml", f"deeper than {MAX_DEPTH} levels", "line")
    assert "RecursionError" not in message
    nothing_written(tmp_path)


def test_an_alias_bomb_in_model_args_with_a_search_space_is_refused_at_once(cli, write_recipe, tmp_path):
    raw = text_of(recipe_dict(SMALL, search={"space": SPACE, "coarse": {"trials": 2, "epochs": 1}}))
    raw = raw.replace("model:\n  name: mlp\n  args:\n", f"model:\n  name: mlp\n  args:\n    bomb: {laughs(9)}\n")
    assert "bomb" in raw and len(laughs(9)) < 600
    started = time.perf_counter()
    bad(cli("search", write_recipe(raw), "--json"), "recipe.yaml", f"more than {MAX_VALUES:,} values", "alias")
    assert time.perf_counter() - started < 10  # it used to hang (1.1 GB and growing)
    nothing_written(tmp_path)


def test_an_alias_bomb_in_data_args_is_refused(cli, write_recipe, tmp_path):
    raw = text_of(SMALL).replace("  args:\n    classes: 3", f"  args:\n    bomb: {laughs(8)}\n    classes: 3", 1)
    bad(cli("check-loss", write_recipe(raw)), "alias")
    nothing_written(tmp_path)


def test_a_recursive_alias_is_refused(cli, write_recipe):
    raw = text_of(SMALL).replace("model:\n", "model: &m\n", 1).replace("  args:\n    hidden:", "  args:\n    me: *m\n    hidden:", 1)
    bad(cli("validate", write_recipe(raw), "--no-build"), "refers to itself")


def test_a_small_bomb_quoted_in_an_error_stays_one_short_paragraph(cli, write_recipe, tmp_path):
    """A bomb under the size limit (4**7 = 16k values) that the user's target rejects: the message quotes a little of it."""
    (tmp_path / "echo.py").write_text("def make(**kw):\n    raise ValueError(repr(kw))\n")
    raw = text_of(recipe_dict(SMALL, data={"target": "echo:make"}))
    raw = raw.replace("  target: echo:make\n", f"  target: echo:make\n  args:\n    x: {laughs(7, 4)}\n")
    assert len(raw.encode()) < 900
    message = bad(cli("check-loss", write_recipe(raw)), "data.target", "ValueError")
    assert len(message) < 1500  # 200 characters of the arguments, 1000 of what the target raised (it quoted them all: 480 KB)


def test_a_bomb_given_from_python_is_refused_too():
    from nndiag import api

    inner: list = ["lol"] * 10
    for _ in range(6):
        inner = [inner] * 10  # 10**7 values once expanded, a few hundred objects in memory
    with pytest.raises(BadInput, match="values"):
        api.load(recipe_dict(SMALL, **{"model.args.bomb": inner}))
    loop: dict = {}
    loop["me"] = loop
    with pytest.raises(BadInput, match="refers to itself"):
        api.load(recipe_dict(SMALL, **{"model.args.loop": loop}))


def test_duplicate_yaml_keys_are_refused_naming_the_key(cli, write_recipe, tmp_path):
    twice = text_of(SMALL).replace("seed: 0\n", "seed: 0\nseed: 1\n", 1)
    bad(cli("check-loss", write_recipe(twice)), "duplicate key 'seed'", "line 3", "first given at line 2")
    nested = text_of(SMALL).replace("  lr: 0.01\n", "  lr: 0.01\n  lr: 0.1\n", 1)
    bad(cli("validate", write_recipe(nested), "--no-build"), "duplicate key 'lr'")
    nothing_written(tmp_path)


def test_a_merge_key_may_still_be_overridden(write_recipe):
    raw = text_of(SMALL).replace("optim:\n", "optim:\n  <<: {name: sgd, lr: 0.5, momentum: 0.5}\n", 1)
    recipe = load_recipe(write_recipe(raw))
    assert (recipe.optim.name, recipe.optim.lr, recipe.optim.momentum) == ("adam", 0.01, 0.5)  # its own keys win over merged ones


# -- values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,phrases",
    [
        ({"seed": 2**70}, ["seed", "2**32 - 1"]),
        ({"seed": -1}, ["seed", "[0, 4294967295]"]),
        ({"optim.lr": 1e30}, ["optim.lr", "at most 1,000"]),
        ({"train.epochs": 1e30}, ["train.epochs", "an integer"]),
        ({"train.epochs": 10**7}, ["train.epochs", "at most 1,000,000"]),
        ({"train.batch_size": 2**60}, ["train.batch_size", "2**53"]),
        ({"search.space": {"optim.lr": {"low": 1e-3, "high": 1e5, "log": True}}}, ["search.space.optim.lr.high", "optim.lr"]),
    ],
    ids=["seed-2**70", "seed-negative", "lr-1e30", "epochs-1e30", "epochs-1e7", "batch-2**60", "space-beyond-lr"],
)
def test_absurd_values_are_refused_before_anything_runs(changes, phrases, cli, write_recipe, tmp_path):
    bad(cli("check-loss", write_recipe(recipe_dict(SMALL, **changes))), *phrases)
    nothing_written(tmp_path)


def test_yaml_epochs_1e30_in_a_file_is_refused(cli, write_recipe):
    raw = text_of(SMALL).replace("epochs: 1", "epochs: 1.0e+30")
    bad(cli("validate", write_recipe(raw), "--no-build"), "train.epochs")


@pytest.mark.parametrize("value", [True, [True, 8], "wide", [0]], ids=["true", "list-with-true", "string", "zero"])
def test_hidden_true_is_not_a_layer_width(value, cli, write_recipe, tmp_path):
    bad(cli("check-loss", write_recipe(recipe_dict(SMALL, **{"model.args.hidden": value}))), "model.args.hidden", "layer widths")
    nothing_written(tmp_path)


def test_cnn_channels_true_is_refused(cli, write_recipe):
    raw = recipe_dict(SMALL, model={"name": "cnn", "args": {"channels": True}})
    bad(cli("validate", write_recipe(raw)), "model.args.channels")


def test_seed_from_python_is_checked():
    import torch

    from nndiag import api

    with pytest.raises(BadInput, match="seed"):
        api.check_loss(torch.nn.Linear(2, 3), (torch.randn(8, 2), torch.randint(0, 3, (8,))), seed=2**70)


def test_a_500_character_name_is_refused_before_any_diagnostic_runs(cli, write_recipe, tmp_path):
    bad(cli("check-loss", write_recipe(recipe_dict(SMALL, name="x" * 500))), "name", "at most 100 characters")
    nothing_written(tmp_path)


def test_a_long_name_from_python_gets_a_short_safe_folder(tmp_path):
    from nndiag.formatting import safe_name
    from nndiag.output.files import run_folder

    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    assert len(safe_name(long_a)) == 100 and safe_name(long_a) != safe_name(long_b)
    assert safe_name("..") == "run" and safe_name("a/b") == "a-b"
    assert run_folder(long_a, "check-loss", root=tmp_path).is_dir()


# -- models -----------------------------------------------------------------------------------------

NO_PARAMETERS = """
import torch
from torch import nn


class Fixed(nn.Module):
    # scores the spiral with fixed weights (a buffer): it runs, but there is nothing to train
    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.randn(2, 3))

    def forward(self, x):
        return x @ self.weight


def build():
    return Fixed()
"""


def test_a_model_with_no_parameters_is_refused_when_the_experiment_is_built(cli, write_recipe, tmp_path):
    (tmp_path / "empty.py").write_text(NO_PARAMETERS)
    path = write_recipe(recipe_dict(SMALL, model={"target": "empty:build"}))
    bad(cli("validate", path), "model.target", "empty:build", "(Fixed) has no parameters")
    bad(cli("check-loss", path, "--json"), "no parameters")
    nothing_written(tmp_path)


def test_a_model_with_no_parameters_from_python_is_refused():
    import torch

    from nndiag import api

    with pytest.raises(BadInput, match="no parameters") as info:
        api.check_loss(torch.nn.ReLU(), (torch.randn(8, 2), torch.randint(0, 2, (8,))))
    assert info.value.where == "model"


# -- user code that ends the program -----------------------------------------------------------------

EXITS = """
import sys
from torch import nn

class Exits(nn.Module):
    '''Scores the data once (nndiag's shape check), then ends the program the way it is told.'''
    def __init__(self, how="exit0"):
        super().__init__()
        self.net, self.how, self.calls = nn.Linear(2, 3), how, 0
    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            if self.how == "generator":
                raise GeneratorExit()
            sys.exit(int(self.how[4:]))
        return self.net(x)

def build(how="exit0"):
    if how == "generator":
        raise GeneratorExit()
    sys.exit(int(how[4:]))
"""


@pytest.mark.parametrize("how", ["exit0", "exit7", "generator"])
def test_a_builder_that_ends_the_program_is_bad_input(how, cli, write_recipe, tmp_path):
    """A model target that raises SystemExit / GeneratorExit when nndiag builds it: the recipe points at code that
    cannot build a model, so it is the recipe's input error (exit 2), named by its key."""
    (tmp_path / "exits.py").write_text(EXITS)
    path = write_recipe(recipe_dict(SMALL, model={"target": "exits:build", "args": {"how": how}}))
    bad(cli("check-loss", path, "--json"), "model.target", "SystemExit" if how != "generator" else "GeneratorExit", "not end the program")
    nothing_written(tmp_path)


@pytest.mark.parametrize("how", ["exit0", "exit7", "generator"])
def test_code_that_ends_the_program_mid_run_is_a_crash_not_a_pass(how, cli, write_recipe, tmp_path):
    """SystemExit(0) in a forward pass used to exit 0 with no JSON (a CI gate read a pass); SystemExit(7) exited 7 and
    GeneratorExit 1 (a fail). Mid-run it is a crash of the user's code: CodeExited, which `main` turns into exit 3."""
    (tmp_path / "exits.py").write_text(EXITS)
    path = write_recipe(recipe_dict(SMALL, model={"target": "exits:Exits", "args": {"how": how}}))
    with pytest.raises(CodeExited, match="SystemExit" if how != "generator" else "GeneratorExit"):
        cli("check-loss", path, "--json")


def test_systemexit_0_mid_run_exits_3_with_a_message(write_recipe, tmp_path):
    (tmp_path / "exits.py").write_text(EXITS)
    path = write_recipe(recipe_dict(SMALL, model={"target": "exits:Exits", "args": {"how": "exit0"}}))
    done = subprocess.run(
        [sys.executable, "-m", "nndiag", "check-loss", str(path), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "NNDIAG_RUNS": str(tmp_path / "runs")},
        timeout=120,
    )
    assert done.returncode == 3 and done.stdout == ""
    assert "your code raised SystemExit(0)" in done.stderr and "exit code 3" in done.stderr
    nothing_written(tmp_path)

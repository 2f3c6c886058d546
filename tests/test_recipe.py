"""Recipes: every malformed key gives exit code 2 and a message naming the key path."""

from __future__ import annotations

import pytest
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.config.recipe import Recipe, load_recipe, parse_recipe
from nndiag.errors import BadInput


def test_minimal_recipe_gets_documented_defaults():
    recipe = parse_recipe({"data": {"name": "spiral"}, "model": {"name": "mlp"}})
    assert isinstance(recipe, Recipe)
    assert recipe.seed == 0 and recipe.device == "auto" and recipe.loss.name == "cross_entropy"
    assert recipe.optim.name == "sgd" and recipe.train.batch_size == 64


def test_string_shorthand_for_loss_and_schedule():
    recipe = parse_recipe(recipe_dict(SPIRAL_MLP, loss="multi_margin", schedule="cosine"))
    assert recipe.loss.name == "multi_margin" and recipe.schedule.name == "cosine"


def test_yaml_scientific_notation_without_dot_is_a_number(write_recipe):
    path = write_recipe("data: {name: spiral}\nmodel: {name: mlp}\noptim: {lr: 1e-3}\n")
    assert load_recipe(path).optim.lr == pytest.approx(1e-3)


def test_name_defaults_to_the_file_stem(write_recipe):
    raw = recipe_dict(SPIRAL_MLP)
    del raw["name"]
    assert load_recipe(write_recipe(raw, "my-exp.yaml")).name == "my-exp"


# Each malformed recipe: (changes, the key path the message must name, a phrase it must contain)
MALFORMED = [
    ({"optim.lr": -0.1}, "optim.lr", "> 0"),
    ({"optim.lr": "fast"}, "optim.lr", "a number"),
    ({"optim.name": "sgdd"}, "optim.name", "adam"),
    ({"optim.momentum": 1.5}, "optim.momentum", "[0, 1)"),
    ({"optim.weight_decay": -1}, "optim.weight_decay", ">= 0"),
    ({"optim.nesterov": True}, "optim.nesterov", "momentum"),
    ({"optim.betas": [0.9]}, "optim.betas", "two numbers"),
    ({"train.batch_size": 0}, "train.batch_size", "> 0"),
    ({"train.batch_size": 2.5}, "train.batch_size", "an integer"),
    ({"train.epochs": "ten"}, "train.epochs", "an integer"),
    ({"train.early_stopping.metric": "f1"}, "train.early_stopping.metric", "val_loss"),
    ({"seed": "zero"}, "seed", "an integer"),
    ({"device": "gpu"}, "device", "cuda"),
    ({"precision": "fp8"}, "precision", "bf16"),
    ({"loss": "hinge"}, "loss.name", "multi_margin"),
    ({"loss.margin": 0}, "loss.margin", "> 0"),
    ({"schedule.name": "exp"}, "schedule.name", "cosine"),
    ({"data.val_fraction": 1.0}, "data.val_fraction", "between 0 and 1"),
    ({"data.normalize": "yes"}, "data.normalize", "true or false"),
    ({"data.target": "nocolon"}, "data.target", "module:attr"),
    ({"data.sizes": 3}, "data.sizes", "unknown key"),
    ({"optimizer": {"lr": 1}}, "optimizer", "unknown key"),
    ({"train.batchsize": 32}, "train.batchsize", "unknown key"),
    ({"model": "mlp"}, "model", "a mapping"),
    ({"search.space": {"optim.lr": {"low": 1.0, "high": 0.1}}}, "search.space.optim.lr", "below high"),
    ({"search.space": {"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}}, "search.space.optim.lr", "low > 0"),
    ({"search.space": {"optim.lrr": {"low": 0.1, "high": 1.0}}}, "search.space.optim.lrr", "not a recipe key path"),
    ({"search.space": {"optim.name": {"type": "categorical"}}}, "search.space.optim.name", "choices"),
    ({"search.space": {"optim.lr": {"low": 0.1}}}, "search.space.optim.lr", "both `low` and `high`"),
    ({"search.coarse.trials": 0}, "search.coarse.trials", "> 0"),
]


@pytest.mark.parametrize("changes,key,phrase", MALFORMED, ids=[m[1] + ":" + str(list(m[0].values())[0])[:12] for m in MALFORMED])
def test_malformed_recipe_names_the_key(changes, key, phrase, write_recipe, cli):
    path = write_recipe(recipe_dict(SPIRAL_MLP, **changes))
    with pytest.raises(BadInput) as info:
        load_recipe(path)
    message = str(info.value)
    assert key in message and phrase in message and str(path) in message
    result = cli("check-loss", path)
    assert result.exit_code == 2
    assert key in result.stderr and "Traceback" not in result.output


def test_both_name_and_target_is_rejected():
    with pytest.raises(BadInput, match="exactly one"):
        parse_recipe(recipe_dict(SPIRAL_MLP, **{"model.target": "x:y"}))


def test_missing_data_is_rejected():
    raw = recipe_dict(SPIRAL_MLP)
    del raw["data"]
    with pytest.raises(BadInput, match="data"):
        parse_recipe(raw)


@pytest.mark.parametrize(
    "text,phrase",
    [
        ("data: {name: spiral\nmodel: x\n", "not valid YAML at line"),
        ("- a\n- b\n", "YAML mapping"),
    ],
)
def test_unreadable_recipe_files(text, phrase, write_recipe, cli):
    path = write_recipe(text)
    result = cli("check-loss", path)
    assert result.exit_code == 2 and phrase in result.stderr and str(path) in result.stderr


def test_missing_recipe_file(cli, tmp_path):
    result = cli("check-loss", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_set_overrides_take_precedence(write_recipe):
    recipe = load_recipe(write_recipe(SPIRAL_MLP), ["optim.lr=0.5", "loss=mse", "model.args.hidden=[8, 8]"])
    assert recipe.optim.lr == 0.5 and recipe.loss.name == "mse" and recipe.model.args["hidden"] == [8, 8]


def test_bad_set_override_is_bad_input(write_recipe, cli):
    result = cli("check-loss", write_recipe(SPIRAL_MLP), "--set", "optim.lr")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr


def test_with_overrides_validates():
    recipe = parse_recipe(recipe_dict(SPIRAL_MLP))
    assert recipe.with_overrides({"optim.lr": 0.3}).optim.lr == 0.3
    with pytest.raises(BadInput, match="optim.lr"):
        recipe.with_overrides({"optim.lr": 0})


def test_to_dict_round_trips():
    recipe = parse_recipe(recipe_dict(SPIRAL_MLP, schedule={"name": "cosine", "warmup_steps": 5}))
    assert parse_recipe(recipe.to_dict()) == recipe


# -- targets ---------------------------------------------------------------------------------

TARGETS = """
import torch
from torch import nn

def make(n=60):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return (x, y), None

def wrong():
    return 42

def build(hidden=8):
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

def not_a_module():
    return "model"

def explodes():
    raise ValueError("boom")
"""


def _target_recipe(data_target: str, model_target: str) -> dict:
    return {"name": "t", "device": "cpu", "data": {"target": data_target}, "model": {"target": model_target}}


def test_target_next_to_the_recipe_is_found(write_recipe, tmp_path, cli):
    (tmp_path / "my_stuff.py").write_text(TARGETS)
    path = write_recipe(_target_recipe("my_stuff:make", "my_stuff:build"))
    result = cli("check-loss", path, "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "data_target,model_target,key,phrase",
    [
        ("missing_module:make", "my_stuff:build", "data.target", "cannot import module 'missing_module'"),
        ("my_stuff:nothing", "my_stuff:build", "data.target", "has no attribute 'nothing'"),
        ("my_stuff:wrong", "my_stuff:build", "data.target", "must return (train, val)"),
        ("my_stuff:make", "my_stuff:not_a_module", "model.target", "must return a torch.nn.Module"),
        ("my_stuff:make", "my_stuff:explodes", "model.target", "ValueError: boom"),
    ],
)
def test_bad_targets_give_exit_2(data_target, model_target, key, phrase, write_recipe, tmp_path, cli):
    (tmp_path / "my_stuff.py").write_text(TARGETS)
    result = cli("check-loss", write_recipe(_target_recipe(data_target, model_target)))
    assert result.exit_code == 2, result.output
    assert key in result.stderr and phrase in result.stderr and "Traceback" not in result.output


def test_model_that_cannot_score_the_data_is_bad_input(write_recipe, tmp_path, cli):
    (tmp_path / "my_stuff.py").write_text(TARGETS)
    raw = _target_recipe("my_stuff:make", "my_stuff:build")
    raw["data"] = {"name": "spiral"}  # 2 features, but the model expects 4
    result = cli("check-loss", write_recipe(raw))
    assert result.exit_code == 2 and "cannot score the data" in result.stderr

"""Any PyTorch model and batch: token ids, dict batches (a real Hugging Face BERT), a custom step and
loss, a token-level language model with -100 targets, from recipes and from the Python API."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import models_zoo as zoo
import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict
from torch import nn

import nndiag

ZOO = Path(__file__).with_name("models_zoo.py")


@pytest.fixture
def recipe_with_zoo(tmp_path: Path, write_recipe: Any) -> Any:
    """recipe_with_zoo(raw) -> the path of a recipe next to a copy of models_zoo.py."""

    def write(raw: dict[str, Any]) -> Path:
        shutil.copy(ZOO, tmp_path / "models_zoo.py")
        return write_recipe(raw)

    return write


def token_recipe(**changes: Any) -> dict[str, Any]:
    raw = {
        "name": "tokens",
        "seed": 0,
        "device": "cpu",
        "data": {"target": "models_zoo:make_token_pairs"},
        "model": {"target": "models_zoo:build_embedding"},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"batch_size": 32, "epochs": 2},
    }
    return recipe_dict(raw, **changes)


def bert_recipe(**changes: Any) -> dict[str, Any]:
    raw = token_recipe(
        **{"data.target": "models_zoo:make_token_dicts", "model.target": "models_zoo:tiny_bert", "optim.name": "adamw", "optim.lr": 0.001}
    )
    return recipe_dict(raw, **changes)


# --------------------------------------------------------------------------------------------
# Token ids and an Embedding model
# --------------------------------------------------------------------------------------------


def test_token_ids_stay_integer_and_an_embedding_model_trains(recipe_with_zoo: Any, cli: Any) -> None:
    path = recipe_with_zoo(token_recipe())
    result = cli("check-loss", path, "--json")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert verdict["metrics"]["expected_loss"] == pytest.approx(math.log(3))
    data = json.loads(cli("check-data", path, "--json").stdout)
    assert data["metrics"]["input_rms"] is None and data["status"] == "pass"  # token ids are not normalisable inputs: no input check
    train = json.loads(cli("train", path, "--json", "--no-progress").stdout)
    assert train["metrics"]["final_val_acc"] > 0.5


def test_api_on_an_embedding_model_with_a_tensor_pair() -> None:
    ids, labels = zoo.token_pairs()
    model = zoo.EmbeddingClassifier()
    result = nndiag.check_loss(model, (ids, labels), loss="cross_entropy")
    assert result.status == "pass" and result.metrics["expected_loss"] == pytest.approx(math.log(3))
    fit = nndiag.overfit_small(model, (ids, labels), optimizer=lambda params: torch.optim.Adam(params, 0.01), batch_size=16)
    assert fit.status == "pass", fit.findings


# --------------------------------------------------------------------------------------------
# A Hugging Face BERT on dict batches, by recipe and through the API
# --------------------------------------------------------------------------------------------


def test_tiny_bert_by_recipe_through_every_command(recipe_with_zoo: Any, cli: Any, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    path = recipe_with_zoo(
        bert_recipe(**{"search.space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "search.coarse": {"trials": 2, "epochs": 1}})
    )
    check = json.loads(cli("check-loss", path, "--json").stdout)
    assert check["status"] == "pass" and check["metrics"]["expected_loss"] == pytest.approx(math.log(3))
    assert "C from the logits" in check["metrics"]["expected_from"]
    fit = json.loads(cli("overfit-small", path, "--json", "--batches", "2", "--steps", "300").stdout)
    assert fit["status"] == "pass", fit["findings"]
    found = json.loads(cli("lr-find", path, "--json", "--steps", "60").stdout)
    assert found["metrics"]["suggested_lr"] is not None
    probe = json.loads(cli("probe", path, "--json").stdout)
    assert probe["findings"] == []  # a healthy model: no false alarm
    train = json.loads(cli("train", path, "--json", "--no-progress").stdout)
    assert math.isfinite(train["metrics"]["final_val_loss"]) and train["metrics"]["final_val_acc"] > 1 / 3  # above chance (3 classes)
    search = cli("search", path, "--json", "--stages", "coarse", "--out", tmp_path / "search")
    assert search.exit_code == 0 and json.loads(search.stdout)["status"] == "pass", search.output
    assert json.loads(search.stdout)["metrics"]["trials"] == 2


def test_tiny_bert_through_the_api() -> None:
    pytest.importorskip("transformers")
    train, _ = zoo.make_token_dicts()
    model = zoo.tiny_bert()
    check = nndiag.check_loss(model, train, batch_size=32)
    assert check.status == "pass" and check.metrics["expected_loss"] == pytest.approx(math.log(3))
    fit = nndiag.overfit_small(model, train, optimizer=lambda params: torch.optim.AdamW(params, 1e-3), batch_size=32, batches=2, steps=300)
    assert fit.status == "pass", fit.findings
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    found = nndiag.lr_find(model, optimizer, train, batch_size=32, steps=60)
    assert found.metrics["suggested_lr"] is not None and optimizer.param_groups[0]["lr"] == 1e-3
    assert nndiag.probe(model, train, batch_size=32).findings == []


def test_a_dataloader_of_dicts_is_used_as_it_is() -> None:
    pytest.importorskip("transformers")
    train, _ = zoo.make_token_dicts()
    rows = [{k: v[i] for k, v in train.items()} for i in range(len(train["labels"]))]
    loader = torch.utils.data.DataLoader(rows, batch_size=16, shuffle=True)
    result = nndiag.check_loss(zoo.tiny_bert(), loader, batches=3)
    assert result.status == "pass" and int(result.table["examples"].sum()) == 48


# --------------------------------------------------------------------------------------------
# A custom step on a two-headed model, and a custom loss
# --------------------------------------------------------------------------------------------


def test_custom_step_on_a_two_headed_model(recipe_with_zoo: Any, cli: Any) -> None:
    raw = recipe_dict(SPIRAL_MLP, **{"model": {"target": "models_zoo:build_two_heads"}, "step": {"target": "models_zoo:two_head_step"}})
    path = recipe_with_zoo(raw)
    check = json.loads(cli("check-loss", path, "--json").stdout)
    assert check["metrics"]["expected_loss"] == pytest.approx(math.log(3))  # from the logits the step returned
    fit = json.loads(cli("overfit-small", path, "--json").stdout)
    assert fit["metrics"]["final_accuracy"] > 0.9
    train = json.loads(cli("train", path, "--json", "--no-progress").stdout)
    assert train["metrics"]["final_val_acc"] > 0.5


def test_a_step_without_logits_says_what_it_could_not_check() -> None:
    x, y = torch.randn(128, 2), torch.randint(0, 3, (128,))
    model = zoo.build_two_heads()

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        return zoo.two_head_step(model, batch)["loss"]

    result = nndiag.check_loss(model, (x, y), step=step)
    assert [f.code for f in result.findings] == ["not-checked"] and result.status == "pass"
    assert result.metrics["expected_loss"] is None and math.isfinite(result.metrics["initial_loss"])
    given = nndiag.check_loss(model, (x, y), step=step, expected=math.log(3))
    assert given.metrics["expected_loss"] == pytest.approx(math.log(3)) and given.metrics["expected_from"] == "given by the user"
    fit = nndiag.overfit_small(model, (x, y), step=step, steps=50)
    assert "not-checked" in [f.code for f in fit.findings]


def test_custom_loss_callable_and_loss_class_target(recipe_with_zoo: Any, cli: Any) -> None:
    ids, labels = zoo.token_pairs()
    result = nndiag.check_loss(zoo.EmbeddingClassifier(), (ids, labels), loss=nn.CrossEntropyLoss(label_smoothing=0.1))
    assert result.status == "pass" and result.metrics["expected_loss"] == pytest.approx(math.log(3))
    path = recipe_with_zoo(token_recipe(**{"loss": {"target": "torch.nn:CrossEntropyLoss", "args": {"label_smoothing": 0.1}}}))
    verdict = json.loads(cli("check-loss", path, "--json").stdout)
    assert verdict["status"] == "pass" and "custom loss" in verdict["metrics"]["expected_from"]


# --------------------------------------------------------------------------------------------
# A token-level language model: logits (B, T, V), -100 targets
# --------------------------------------------------------------------------------------------


def test_token_level_lm_expects_ln_v_and_ignores_minus_100() -> None:
    inputs, targets = zoo.lm_pairs()
    assert (targets == -100).any()
    result = nndiag.check_loss(zoo.TinyLM(), (inputs, targets), loss="cross_entropy")
    assert result.metrics["expected_loss"] == pytest.approx(math.log(zoo.VOCAB))
    assert "ln C = ln 20" in result.metrics["expected_from"]
    assert result.status == "pass", result.findings
    fit = nndiag.overfit_small(zoo.TinyLM(), (inputs, targets), optimizer=lambda p: torch.optim.Adam(p, 0.01), steps=200)
    assert fit.metrics["final_accuracy"] <= 1.0 and fit.metrics["final_loss"] < fit.metrics["initial_loss"]


def test_accuracy_and_the_loss_weight_count_only_targets_that_are_not_ignored() -> None:
    from nndiag.training.scoring import accuracy_counts, class_axis, counted_targets

    logits = torch.zeros(2, 3, 4)
    logits[..., 1] = 1.0  # always predicts class 1
    targets = torch.tensor([[1, 2, -100], [1, -100, -100]])
    axis = class_axis(logits, targets)
    assert axis == 2
    correct, counted = accuracy_counts(logits, targets, axis)
    assert (int(correct), int(counted)) == (2, 3) and int(counted_targets(targets, 2)) == 3
    assert class_axis(torch.zeros(2, 4, 5, 5), torch.zeros(2, 5, 5, dtype=torch.long)) == 1  # (B, C, H, W) segmentation
    assert class_axis(torch.zeros(8, 1), torch.zeros(8)) is None  # regression


# --------------------------------------------------------------------------------------------
# lr_find hands the user's objects back bit for bit
# --------------------------------------------------------------------------------------------


def _everything(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    import random

    import numpy as np

    return {
        "tensors": {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
        "state": {
            k: {n: t.clone() if isinstance(t, torch.Tensor) else t for n, t in v.items()}
            for k, v in optimizer.state_dict()["state"].items()
        },
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["tensors"].keys() == b["tensors"].keys()
    assert all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a["grads"], b["grads"]))
    assert a["modes"] == b["modes"] and a["groups"] == b["groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        for name, value in a["state"][k].items():
            other = b["state"][k][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert torch.equal(a["rng"][0], b["rng"][0]) and (a["rng"][1] == b["rng"][1]).all() and a["rng"][2] == b["rng"][2]


def test_lr_find_hands_back_the_users_model_and_optimizer_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
    model.register_buffer("calls", torch.zeros(1), persistent=False)  # state_dict() leaves this out; we do not
    optimizer = torch.optim.Adam([{"params": model[0].parameters(), "lr": 1e-3}, {"params": model[4].parameters(), "lr": 1e-2}])
    x, y = torch.randn(256, 2), torch.randint(0, 3, (256,))
    for _ in range(3):  # optimizer state that is not empty, and gradients left on the parameters
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
        optimizer.step()
    model.eval()
    model[1].train()  # a mixed pattern of train/eval flags
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    before = _everything(model, optimizer)
    result = nndiag.lr_find(model, optimizer, loader, loss=nn.CrossEntropyLoss(), steps=40)
    assert len(result.table) > 5
    _same(before, _everything(model, optimizer))
    lrs = result.table["lr"]
    assert lrs.iloc[0] == pytest.approx(1e-7)  # the first group follows the test; the second kept its ratio (x10)


# --------------------------------------------------------------------------------------------
# Variable-length items: a collate function
# --------------------------------------------------------------------------------------------


def test_variable_length_items_need_a_collate_and_work_with_one(recipe_with_zoo: Any, cli: Any) -> None:
    raw = token_recipe(**{"data.target": "models_zoo:make_variable_length"})
    missing = cli("check-loss", recipe_with_zoo(raw))
    assert missing.exit_code == 2 and "data.collate" in missing.stderr and "Traceback" not in missing.output
    raw["data"]["collate"] = "models_zoo:pad_collate"
    result = cli("check-loss", recipe_with_zoo(raw), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["expected_loss"] == pytest.approx(math.log(3))


# --------------------------------------------------------------------------------------------
# Bad input: exit 2 naming the recipe key; nndiag.BadInput naming the API argument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step,phrase", [("step_non_scalar", "scalar loss"), ("step_non_tensor", "scalar torch tensor"), ("step_no_loss", "no 'loss'")]
)
def test_a_step_that_returns_no_scalar_loss_is_bad_input(step: str, phrase: str, recipe_with_zoo: Any, cli: Any) -> None:
    raw = recipe_dict(SPIRAL_MLP, **{"model": {"target": "models_zoo:build_two_heads"}, "step": {"target": f"models_zoo:{step}"}})
    result = cli("check-loss", recipe_with_zoo(raw))
    assert result.exit_code == 2 and "step.target" in result.stderr and phrase in result.stderr and "Traceback" not in result.output
    with pytest.raises(nndiag.BadInput, match=f"^step: .*{phrase}"):
        nndiag.check_loss(zoo.build_two_heads(), (torch.randn(64, 2), torch.randint(0, 3, (64,))), step=getattr(zoo, step))


def test_a_batch_the_model_rejects_is_bad_input(recipe_with_zoo: Any, cli: Any) -> None:
    result = cli(
        "check-loss",
        recipe_with_zoo(token_recipe(**{"data.target": "models_zoo:make_token_dicts"})),
        "--set",
        "loss.target=torch.nn:CrossEntropyLoss",
    )
    assert result.exit_code == 2 and "model:" in result.stderr and "cannot score the data" in result.stderr
    with pytest.raises(nndiag.BadInput, match="^model: the model cannot score the data"):
        nndiag.check_loss(zoo.EmbeddingClassifier(), (torch.randn(64, 5), torch.randint(0, 3, (64,))))


def test_a_loss_with_the_wrong_signature_is_bad_input(recipe_with_zoo: Any, cli: Any) -> None:
    result = cli("check-loss", recipe_with_zoo(token_recipe(**{"loss": {"target": "models_zoo:loss_three_args"}})))
    assert result.exit_code == 2 and "loss.target" in result.stderr and "loss_fn(outputs, targets)" in result.stderr
    with pytest.raises(nndiag.BadInput, match="^loss: expected loss_fn"):
        nndiag.check_loss(zoo.EmbeddingClassifier(), zoo.token_pairs(), loss=zoo.loss_three_args)


def test_labels_missing_from_a_dict_batch_is_bad_input(recipe_with_zoo: Any, cli: Any) -> None:
    pytest.importorskip("transformers")
    result = cli("check-loss", recipe_with_zoo(bert_recipe(**{"data.target": "models_zoo:make_token_dicts_without_labels"})))
    assert result.exit_code == 2 and "data:" in result.stderr and "labels" in result.stderr and "Traceback" not in result.output
    train, _ = zoo.make_token_dicts_without_labels()
    with pytest.raises(nndiag.BadInput, match="^data: .*`labels`"):
        nndiag.check_loss(zoo.tiny_bert(), train)


def test_api_argument_errors_name_the_argument() -> None:
    with pytest.raises(nndiag.BadInput, match="^data:"):
        nndiag.check_loss(zoo.EmbeddingClassifier())
    with pytest.raises(nndiag.BadInput, match="^loss: unknown loss"):
        nndiag.check_loss(zoo.EmbeddingClassifier(), zoo.token_pairs(), loss="hinge")
    with pytest.raises(nndiag.BadInput, match="^optimizer:"):
        nndiag.overfit_small(zoo.EmbeddingClassifier(), zoo.token_pairs(), optimizer=42)
    with pytest.raises(ValueError):  # BadInput is a ValueError
        nndiag.probe(zoo.EmbeddingClassifier(), "not data")


# --------------------------------------------------------------------------------------------
# The Result: status, findings, metrics, table, plot, save, to_json -- the CLI's objects
# --------------------------------------------------------------------------------------------


def test_result_saves_the_clis_run_folder_and_prints_the_same_json(tmp_path: Path) -> None:
    ids, labels = zoo.token_pairs()
    result = nndiag.check_loss(zoo.EmbeddingClassifier(), (ids, labels))
    assert result.status == "pass" and result.table is not None and list(result.table.columns)[:3] == ["batch", "examples", "loss"]
    assert "check-loss" in repr(result) and "PASS" in result._repr_markdown_()
    assert result.outputs == {} and not any(tmp_path.iterdir())  # nothing written until asked
    folder = result.save(tmp_path / "run")
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk == json.loads(result.to_json())
    assert on_disk["command"] == "check-loss" and on_disk["recipe"] == "python" and (folder / "check_loss.csv").exists()


def test_result_plot_is_a_matplotlib_figure() -> None:
    fit = nndiag.overfit_small(zoo.EmbeddingClassifier(), zoo.token_pairs(), steps=30)
    figure = fit.plot()
    assert type(figure).__name__ == "Figure"


def test_api_runs_recipes_the_cli_runs(write_recipe: Any) -> None:
    path = write_recipe(SPIRAL_MLP)
    from_path = nndiag.check_loss(str(path), set=["train.batch_size=16"])
    from_dict = nndiag.check_loss(recipe_dict(SPIRAL_MLP, **{"train.batch_size": 16}))
    assert from_path.metrics == from_dict.metrics and from_path.recipe["train"]["batch_size"] == 16
    with pytest.raises(nndiag.BadInput, match="^data:"):
        nndiag.check_loss(str(path), data=(torch.zeros(2), torch.zeros(2)))


def test_importing_nndiag_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, nndiag; nndiag.check_loss; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# The bundled sequence recipes
# --------------------------------------------------------------------------------------------

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_bundled_gru_on_token_ids_reaches_90_percent(cli: Any, tmp_path: Path) -> None:
    result = cli("train", RECIPES / "tokens-gru.yaml", "--json", "--no-progress", "--set", "device=cpu", "--out", tmp_path / "run")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0 and verdict["status"] == "pass", verdict["findings"]
    assert verdict["metrics"]["final_val_acc"] >= 0.9


def test_bundled_tiny_bert_recipe_builds_from_a_config_and_starts_at_ln_c(cli: Any) -> None:
    pytest.importorskip("transformers")
    verdict = json.loads(cli("check-loss", RECIPES / "tiny-bert.yaml", "--json", "--set", "device=cpu").stdout)
    assert verdict["status"] == "pass" and verdict["metrics"]["expected_loss"] == pytest.approx(math.log(4))
    fit = json.loads(cli("overfit-small", RECIPES / "tiny-bert.yaml", "--json", "--set", "device=cpu", "--batches", "2").stdout)
    assert fit["status"] == "pass", fit["findings"]


def test_probing_the_bundled_tiny_bert_while_it_trains_raises_no_false_alarm(cli: Any, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    # seen before the fix: exploding-activations from its pooler's one tanh at step 150, and update-ratio-low at the
    # end of the cosine decay; the model reaches 97%
    result = cli(
        "train",
        RECIPES / "tiny-bert.yaml",
        "--json",
        "--no-progress",
        "--no-plots",
        "--probe-every",
        "50",
        "--set",
        "device=cpu",
        "--out",
        tmp_path / "run",
    )
    verdict = json.loads(result.stdout)
    assert verdict["findings"] == [] and verdict["metrics"]["probed_steps"] == 8

"""Engine: expected initial losses, schedules, snapshot/restore, seeding."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.config.recipe import LossConfig, OptimConfig, ScheduleConfig
from nndiag.training import engine
from nndiag.training.scoring import Objective


@pytest.mark.parametrize(
    "loss,classes,expected",
    [
        ("cross_entropy", 10, math.log(10)),
        ("cross_entropy", 3, math.log(3)),
        ("multi_margin", 10, 9 / 10),
        ("multi_margin", 4, 3 / 4),
    ],
)
def test_expected_initial_loss_is_the_loss_of_uniform_outputs(loss, classes, expected):
    objective = Objective(LossConfig(name=loss), classes)
    y = torch.randint(0, classes, (500,))
    value, why = objective.expected_initial_loss(y)
    assert value == pytest.approx(expected)
    assert float(objective.loss(torch.zeros(500, classes), y)) == pytest.approx(expected, rel=1e-6)
    assert why


def test_bce_expects_ln2_with_one_output():
    objective = Objective(LossConfig(name="bce"), 2)
    assert objective.outputs() == 1
    y = torch.randint(0, 2, (100,))
    assert float(objective.loss(torch.zeros(100, 1), y)) == pytest.approx(math.log(2))
    assert objective.expected_initial_loss(y)[0] == pytest.approx(math.log(2))


def test_mse_expects_target_variance():
    objective = Objective(LossConfig(name="mse"), None)
    y = torch.randn(1000) * 3
    value, why = objective.expected_initial_loss(y)
    assert value == pytest.approx(float(y.var(unbiased=False))) and "variance" in why
    assert objective.correct(torch.zeros(1000, 1), y) is None


def test_accuracy_counts_argmax():
    objective = Objective(LossConfig(), 3)
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    correct, counted = objective.correct(logits, torch.tensor([0, 1, 0]))
    assert int(correct) == 2 and int(counted) == 3


@pytest.mark.parametrize(
    "name,step,expected",
    [
        ("none", 50, 1.0),
        ("cosine", 0, 1.0),
        ("cosine", 50, 0.5),
        ("cosine", 100, 0.0),
        ("linear", 25, 0.75),
        ("step", 10 * 20, 0.1),  # 20 steps per epoch, step_size 10 epochs
        ("step", 10 * 20 - 1, 1.0),
    ],
)
def test_lr_factor(name, step, expected):
    config = ScheduleConfig(name=name)
    assert engine.lr_factor(config, step, total_steps=100, steps_per_epoch=20) == pytest.approx(expected, abs=1e-9)


def test_warmup_is_linear_then_schedule():
    config = ScheduleConfig(name="inverse-sqrt", warmup_steps=4)
    factors = [engine.lr_factor(config, s, 100, 10) for s in range(8)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(math.sqrt(4 / 5)) and factors[7] == pytest.approx(math.sqrt(4 / 8))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_builds(name):
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = engine.build_optimizer(params, OptimConfig(name=name, lr=0.1, momentum=0.5 if name == "sgd" else 0.0))
    assert opt.param_groups[0]["lr"] == 0.1


def test_snapshot_restores_model_optimizer_and_rng_bit_for_bit(build):
    exp = build(recipe_dict(SPIRAL_MLP))
    opt = exp.optimizer()
    for batch in exp.train_batches():  # give the optimizer some state first
        exp.step(opt, batch)
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    opt_before = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state_dict()["state"].items()}
    with engine.preserved(exp.model, opt):
        exp.model.eval()
        for batch in exp.train_batches():
            exp.step(opt, batch)
        torch.rand(3)
    state = engine.rng_state()
    expected_next = torch.rand(4)
    engine.set_rng_state(state)
    with engine.preserved(exp.model, opt):
        torch.rand(5)  # a block that draws random numbers leaves the stream where it was
    assert torch.equal(torch.rand(4), expected_next)
    assert exp.model.training
    for k, v in exp.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, state in opt.state_dict()["state"].items():
        for n, t in state.items():
            assert torch.equal(t, opt_before[k][n])


def test_rng_state_restored():
    state = engine.rng_state()
    a = torch.rand(3)
    engine.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_same_recipe_same_numbers_on_cpu(build):
    from nndiag.training.trainer import Trainer

    runs = [Trainer(build(recipe_dict(SPIRAL_MLP)), epochs=2).fit().steps["loss"].tolist() for _ in range(2)]
    assert runs[0] == runs[1]


def test_resolve_device_auto_and_errors():
    from nndiag.errors import BadInput

    assert engine.resolve_device("cpu").type == "cpu"
    assert engine.resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="CUDA"):
            engine.resolve_device("cuda")
        with pytest.raises(BadInput, match="bf16"):
            engine.autocast_dtype(torch.device("cpu"), "bf16")
    assert engine.autocast_dtype(torch.device("cpu"), "auto") is None


def test_dropout_off_keeps_batchnorm_mode():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    model.train()
    with engine.dropout_off(model):
        assert not model[2].training and model[1].training
    assert model[2].training


def test_l2_penalty_matches_weight_decay():
    p = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = torch.optim.SGD([p], lr=0.1, weight_decay=0.01)
    assert float(engine.l2_penalty(opt)) == pytest.approx(0.5 * 0.01 * 16) and not engine.decoupled(opt, opt.param_groups[0])
    adamw = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)  # decoupled: the decay never enters the loss
    assert engine.decoupled(adamw, adamw.param_groups[0]) and float(engine.l2_penalty(adamw)) == 0.0


def test_a_model_that_starts_trained_is_not_aborted_as_diverged(build):
    """The 3x abort rule is relative to the chance-level loss too: fine-tuning from ~0 loss is not divergence."""
    from nndiag.training.trainer import Trainer

    exp = build(recipe_dict(SPIRAL_MLP, **{"model.args.hidden": [64, 64], "train.epochs": 20}))
    assert Trainer(exp).fit().stopped == "completed"
    again = Trainer(exp, epochs=2).fit()  # starts with a near-zero loss that wobbles by more than 3x
    assert again.stopped == "completed" and len(again.epochs) == 2
    blown = Trainer(build(recipe_dict(SPIRAL_MLP, optim={"name": "sgd", "lr": 1e3}))).fit()
    assert blown.stopped == "diverged"


def test_check_loss_and_overfit_small_hand_back_batch_order_and_gradients(build):
    from nndiag.diagnostics import check_loss, overfit_small

    exp = build(recipe_dict(SPIRAL_MLP))
    state = exp.generator.get_state()
    check_loss.run(exp)
    overfit_small.run(exp, steps=10)
    assert torch.equal(exp.generator.get_state(), state)
    assert all(p.grad is None for p in exp.model.parameters())


def test_deferred_loss_read_back_gives_the_same_history(build):
    """On a GPU the trainer reads losses back every 10 steps; on the CPU every step. Same numbers."""
    from nndiag.training.trainer import Trainer

    every_step = Trainer(build(recipe_dict(SPIRAL_MLP)), sync_every=1).fit()
    batched = Trainer(build(recipe_dict(SPIRAL_MLP)), sync_every=10).fit()
    assert every_step.steps.equals(batched.steps)
    assert every_step.epochs.drop(columns="seconds").equals(batched.epochs.drop(columns="seconds"))
    blown = Trainer(build(recipe_dict(SPIRAL_MLP, optim={"name": "sgd", "lr": 1e3})), sync_every=10).fit()
    assert blown.stopped == "diverged"
    capped = Trainer(build(recipe_dict(SPIRAL_MLP)), sync_every=10, max_steps=7).fit()
    assert capped.stopped == "max_steps" and len(capped.steps) == 7


@pytest.mark.parametrize("cls", [torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD, torch.optim.RMSprop])
def test_optimizer_like_rebuilds_any_torch_optimizer(cls):
    """torch's AdamW records `decoupled_weight_decay` in its defaults but takes no such argument."""
    from nndiag.training.engine import optimizer_like

    params = [torch.nn.Parameter(torch.zeros(3))]
    original = cls(params, lr=0.05, weight_decay=0.01)
    fresh = optimizer_like(original)(params)
    other = optimizer_like(original)([torch.nn.Parameter(torch.zeros(2))])
    for made in (fresh, other):
        assert type(made) is cls and made.param_groups[0]["lr"] == 0.05 and made.param_groups[0]["weight_decay"] == 0.01

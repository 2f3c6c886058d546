"""nndiag.watch on hand-written PyTorch loops (nndiag/integrations/loop.py, nndiag/diagnostics/loop.py).

Every loop bug is a loop that must trigger its finding beside its fixed twin that must not, and the same two
loops without nndiag show that the bug trains clearly worse (plain PyTorch, no nndiag in the measurement).
Healthy loops (an MLP with dropout and a shuffling DataLoader, a CNN with BatchNorm, gradient accumulation
done right, a GRU) give no warn or fail finding in any stage. The watch changes nothing the loop computes."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nndiag
from nndiag.diagnostics import loop
from nndiag.integrations import DiagnosisFailed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@functools.lru_cache(maxsize=None)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits: raw pixels (0..16), standardised pixels, labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    raw = torch.tensor(x, dtype=torch.float32)
    return raw, (raw - raw.mean(0)) / (raw.std(0) + 1e-6), torch.tensor(y)


TRAIN, VAL = slice(0, 1400), slice(1400, None)


def mlp(seed: int = 0, dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    if batchnorm:
        return nn.Sequential(nn.BatchNorm1d(64), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else []), nn.Linear(128, 10))


class CNN(nn.Module):
    """A small CNN with BatchNorm on the 8x8 digits as 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


class GRUClassifier(nn.Module):
    """The digits' 8 rows as a sequence of 8 steps of 8 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 64, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.reshape(-1, 8, 8))
        return self.head(out[:, -1])


def loader(x: torch.Tensor, y: torch.Tensor, seed: int = 0, batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x[TRAIN], y[TRAIN]), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(x[VAL]), y[VAL]))


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    bug: str | None = None,
    x: torch.Tensor | None = None,
    w: Any = None,
    scheduler: Any = None,
    accumulate: int = 1,
) -> list[float]:
    """A plain PyTorch loop (with `bug` planted), optionally telling a watch `w` its losses; returns every batch's loss."""
    raw, standard, y = digits()
    x = standard if x is None else x
    batches = loader(x, y)
    fixed = next(iter(loader(x, y, seed=1)))
    criterion = nn.CrossEntropyLoss()
    losses: list[float] = []
    for _epoch in range(epochs):
        model.train()
        for i, (xb, yb) in enumerate(batches):
            if bug == "same-batch":
                xb, yb = fixed
            if bug == "eval-mode":
                model.eval()
            if bug not in ("no-zero-grad", "zero-grad-before-step") and i % accumulate == 0:
                optimizer.zero_grad()
            if bug == "no-grad":
                with torch.no_grad():
                    loss = criterion(model(xb), yb)
            elif bug == "detached":
                loss = criterion(model(xb), yb).detach().requires_grad_()
            else:
                loss = criterion(model(xb), yb) / accumulate
            loss.backward()
            if bug == "zero-grad-before-step":
                optimizer.zero_grad()
            if bug != "no-step" and (i + 1) % accumulate == 0:
                optimizer.step()
            if scheduler is not None and bug == "schedule-per-batch":
                scheduler.step()
            losses.append(float(loss))
            if w is not None:
                w.log(loss=loss)
        if scheduler is not None and bug != "schedule-per-batch":
            scheduler.step()
        if w is not None:
            w.log(val_loss=val_loss(model, x, y))
    return losses


def codes(result: Any, severities: tuple[str, ...] = ("warn", "fail")) -> list[str]:
    return [f.code for f in result.findings if f.severity in severities]


def watched(
    tmp_path: Path, make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]], name: str, **loop_args: Any
) -> tuple[Any, nn.Module]:
    model, optimizer = make()
    with nndiag.watch(model, optimizer, out=tmp_path / name, plots=False) as w:
        train(model, optimizer, w=w, **loop_args)
    return w.result, model


def sgd(model_fn: Callable[[], nn.Module] = mlp, lr: float = 0.05) -> Callable[[], tuple[nn.Module, torch.optim.Optimizer]]:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = model_fn()
        return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    return make


def trained_val_loss(make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]], **loop_args: Any) -> float:
    """The validation loss after the plain loop, no nndiag anywhere."""
    model, optimizer = make()
    train(model, optimizer, **loop_args)
    raw, standard, y = digits()
    return val_loss(model, loop_args.get("x", standard), y)


def reduced_loop(tmp_path: Path, reduction: str, epochs: int = 2, divide: bool = False) -> Any:
    """A loop whose loss module reduces as `reduction` says ("none": the loop averages the per-example losses itself;
    "sum": the loop divides by the batch size when `divide`), the losses read by the hooks (no w.log)."""
    _, x, y = digits()
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss(reduction=reduction)
    with nndiag.watch(model, optimizer, out=tmp_path / f"{reduction}{divide}", plots=False) as w:
        for _ in range(epochs):
            for xb, yb in loader(x, y):
                loss = criterion(model(xb), yb)
                loss = loss.mean() if reduction == "none" else loss / (len(yb) if divide else 1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return w.result


def test_a_per_example_loss_averaged_by_the_loop_is_a_healthy_loop(tmp_path: Path) -> None:
    result = reduced_loop(tmp_path, "none")
    assert result.status == "pass" and codes(result) == [], [(f.code, f.message) for f in result.findings]
    assert result.metrics["check-loss.initial_loss"] == pytest.approx(math.log(10), rel=0.3)  # the mean, not a vector
    assert result.summary["metrics"]["steps"] == {"check-loss": "pass", "loop": "pass", "curves": "pass"}


def test_a_summed_loss_module_is_loss_scales_with_batch_not_an_initial_loss_too_high(tmp_path: Path) -> None:
    result = reduced_loop(tmp_path, "sum", epochs=1)
    found = {f.code: f for f in result.findings}
    assert "initial-loss-high" not in found and found["loss-scales-with-batch"].severity == "warn"
    assert found["loss-scales-with-batch"].evidence["elements"] == 64
    assert result.metrics["check-loss.initial_loss"] == pytest.approx(math.log(10), rel=0.3)  # per element
    assert result.root_causes[0]["cause"] == "loss-sums", result.root_causes
    divided = reduced_loop(tmp_path, "sum", epochs=1, divide=True)  # a sum divided by the batch size is a mean: fine
    assert {"initial-loss-high", "loss-scales-with-batch"}.isdisjoint(codes(divided)), divided.findings


class TwoHeads(nn.Module):
    """One trunk, two task heads; each step trains one task (multi-task training by alternating batches)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
        self.digit = nn.Linear(128, 10)
        self.parity = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return (self.digit if task == "digit" else self.parity)(self.trunk(x))


def test_alternating_task_heads_are_not_steps_without_a_gradient(tmp_path: Path) -> None:
    _, x, y = digits()
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with nndiag.watch(model, optimizer, out=tmp_path / "heads", plots=False) as w:
        for _ in range(2):
            for i, (xb, yb) in enumerate(loader(x, y)):
                task = "digit" if i % 2 == 0 else "parity"
                loss = F.cross_entropy(model(xb, task), yb if task == "digit" else yb % 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                w.log(loss=loss)
    assert "no-gradient-at-step" not in codes(w.result), w.result.findings
    assert w.result.metrics["loop.no_grad_steps"] == 0


# --------------------------------------------------------------------------------------------
# Healthy loops: no warn, no fail, in any stage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, make, epochs",
    [
        ("mlp-dropout", lambda: (lambda m: (m, torch.optim.Adam(m.parameters(), lr=1e-2)))(mlp(dropout=0.2)), 6),
        ("cnn-batchnorm", lambda: (lambda m: (m, torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9)))(CNN()), 3),
        ("gru", lambda: (lambda m: (m, torch.optim.Adam(m.parameters(), lr=3e-3)))(GRUClassifier()), 4),
    ],
)
def test_a_healthy_loop_gets_no_warning(tmp_path: Path, name: str, make: Any, epochs: int) -> None:
    torch.manual_seed(0)
    result, _ = watched(tmp_path, make, name, epochs=epochs)
    assert result.status == "pass" and codes(result) == [], [(f.code, f.message) for f in result.findings]
    assert result.summary["metrics"]["steps"] == {"check-loss": "pass", "loop": "pass", "curves": "pass"}
    assert result.metrics["check-loss.expected_loss"] == pytest.approx(math.log(10))  # C from the loss module's logits


def test_gradient_accumulation_done_right_is_not_accumulating_gradients(tmp_path: Path) -> None:
    result, _ = watched(tmp_path, sgd(), "accumulate", epochs=4, accumulate=4)  # zero_grad every 4 batches, step every 4
    assert codes(result) == [], [(f.code, f.message) for f in result.findings]
    table = result.results["loop"].table
    assert len(table) == 20 and (table["forwards"] >= 4).all()  # 4 batches per optimizer step (6 across an epoch's end)
    assert result.metrics["loop.accumulated_steps"] == 0


# --------------------------------------------------------------------------------------------
# Each loop bug: a loop that must trigger it, its fixed twin that must not, and the damage in plain PyTorch
# --------------------------------------------------------------------------------------------


BUGS = [  # (bug planted, its finding, the loop's other arguments, the fixed twin's bug)
    ("no-zero-grad", "grads-accumulate", {}),
    ("no-step", "no-optimizer-step", {}),
    ("detached", "no-gradient-at-step", {}),
    ("zero-grad-before-step", "no-gradient-at-step", {}),
    ("same-batch", "same-batch-repeated", {}),
]


@pytest.mark.parametrize("bug, code, extra", BUGS)
def test_a_loop_bug_is_found_and_its_fixed_twin_is_quiet(tmp_path: Path, bug: str, code: str, extra: dict[str, Any]) -> None:
    buggy, _ = watched(tmp_path, sgd(), "buggy", epochs=2, bug=bug, **extra)
    assert code in codes(buggy), [(f.code, f.message) for f in buggy.findings]
    assert buggy.root_causes and buggy.root_causes[0]["cause"].startswith("loop-"), buggy.root_causes
    fixed, _ = watched(tmp_path, sgd(), "fixed", epochs=2, **extra)
    assert not set(codes(fixed)) & set(loop_codes()), [(f.code, f.message) for f in fixed.findings]
    worse, better = trained_val_loss(sgd(), epochs=2, bug=bug), trained_val_loss(sgd(), epochs=2)
    assert worse > 1.5 * better, (worse, better)  # the bug trains clearly worse, measured without nndiag


def loop_codes() -> list[str]:
    from nndiag.codes import codes_by_command

    return list(codes_by_command()["watch"])


def test_an_optimizer_over_another_model_leaves_the_weights_unchanged(tmp_path: Path) -> None:
    def rebuilt() -> tuple[nn.Module, torch.optim.Optimizer]:
        optimizer = torch.optim.SGD(mlp().parameters(), lr=0.05, momentum=0.9)
        return mlp(seed=1), optimizer  # the model rebuilt after the optimizer was made

    buggy, _ = watched(tmp_path, rebuilt, "rebuilt", epochs=1)
    assert "weights-unchanged" in codes(buggy) and "the optimizer holds none of the model's" in _message(buggy, "weights-unchanged")
    assert buggy.root_causes[0]["cause"] == "loop-weights-unchanged"
    assert "grads-accumulate" in codes(buggy)  # its zero_grad() clears other parameters: the model's pile up, explained
    fixed, _ = watched(tmp_path, sgd(), "fixed", epochs=1)
    assert codes(fixed) == []
    assert trained_val_loss(rebuilt, epochs=2) > 1.5 * trained_val_loss(sgd(), epochs=2)


def test_a_loss_computed_under_no_grad_is_named_when_backward_raises(tmp_path: Path) -> None:
    model, optimizer = sgd()()
    with pytest.raises(RuntimeError, match="does not require grad"):
        with nndiag.watch(model, optimizer, out=tmp_path / "no-grad", plots=False) as w:
            train(model, optimizer, w=w, epochs=1, bug="no-grad")
    result = w.result  # the folder is written before the loop's own exception goes on
    finding = next(f for f in result.findings if f.code == "no-gradient-at-step")
    assert finding.severity == "fail" and "torch.no_grad()" in finding.message and "does not require grad" in finding.message
    assert result.summary["metrics"]["stopped"] == "exception: RuntimeError"
    assert json.loads((tmp_path / "no-grad" / "summary.json").read_text())["status"] == "fail"


def test_training_in_eval_mode_is_found_where_batchnorm_makes_it_matter(tmp_path: Path) -> None:
    raw, _, _ = digits()
    make = sgd(lambda: mlp(batchnorm=True), lr=0.05)
    buggy, _ = watched(tmp_path, make, "eval", epochs=2, bug="eval-mode", x=raw)
    assert "eval-mode-training" in codes(buggy) and "BatchNorm" in _message(buggy, "eval-mode-training")
    fixed, _ = watched(tmp_path, make, "train", epochs=2, x=raw)
    assert "eval-mode-training" not in codes(fixed)
    assert trained_val_loss(make, epochs=2, bug="eval-mode", x=raw) > 1.5 * trained_val_loss(make, epochs=2, x=raw)
    plain, _ = watched(tmp_path, sgd(), "eval-plain", epochs=1, bug="eval-mode")  # no dropout, no BatchNorm: eval mode changes nothing
    assert "eval-mode-training" not in codes(plain)


def test_eval_mode_from_the_first_step_explains_the_huge_initial_loss_it_causes(tmp_path: Path) -> None:
    """BatchNorm normalising unscaled inputs, trained in eval mode from the first step: the first batch's loss is the
    eval mode's (running statistics at their initial 0 and 1), so the cause is the mode, not an output layer too large."""
    raw, _, _ = digits()
    unscaled = raw * 1000 + 500
    make = sgd(lambda: mlp(batchnorm=True), lr=0.05)
    buggy, _ = watched(tmp_path, make, "eval", epochs=2, bug="eval-mode", x=unscaled)
    high = next(f for f in buggy.findings if f.code == "initial-loss-high")
    assert high.evidence["eval_mode"] is True and "measured in eval mode" in high.message
    assert buggy.metrics["check-loss.eval_mode"] is True
    assert buggy.root_causes[0]["cause"] == "loop-eval-mode", buggy.root_causes
    assert "output-too-large" not in [c["cause"] for c in buggy.root_causes]
    fixed, _ = watched(tmp_path, make, "train", epochs=2, x=unscaled)
    assert codes(fixed) == [], [(f.code, f.message) for f in fixed.findings]
    assert fixed.metrics["check-loss.eval_mode"] is False
    worse, better = trained_val_loss(make, epochs=2, bug="eval-mode", x=unscaled), trained_val_loss(make, epochs=2, x=unscaled)
    assert not math.isfinite(worse) and math.isfinite(better)  # in eval mode the unscaled inputs blow training up


def test_a_schedule_stepped_per_batch_collapses_the_lr(tmp_path: Path) -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        model, optimizer = sgd()()
        make.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)  # sized in epochs
        return model, optimizer

    def run(bug: str | None, name: str) -> Any:
        model, optimizer = make()
        with nndiag.watch(model, optimizer, out=tmp_path / name, plots=False) as w:
            train(model, optimizer, w=w, epochs=4, bug=bug, scheduler=make.scheduler)
        return w.result

    buggy = run("schedule-per-batch", "per-batch")
    assert "lr-schedule-collapses" in codes(buggy) and buggy.root_causes[0]["cause"] == "schedule-collapses"
    fixed = run(None, "per-epoch")
    assert "lr-schedule-collapses" not in codes(fixed) and not set(codes(fixed)) & set(loop_codes())
    frame = buggy.results["curves"].tables["metrics"]
    assert frame["lr"].notna().sum() == 88 and frame["lr"].iloc[0] == pytest.approx(0.05)  # the LR of every step, from the optimizer

    def plain(bug: str | None) -> float:
        model, optimizer = make()
        train(model, optimizer, epochs=4, bug=bug, scheduler=make.scheduler)
        return val_loss(model, digits()[1], digits()[2])

    assert plain("schedule-per-batch") > 1.5 * plain(None)


def _message(result: Any, code: str) -> str:
    return next(f.message for f in result.findings if f.code == code)


# --------------------------------------------------------------------------------------------
# The first batch: logits found without asking, num_classes as the override, fail_on before the first step
# --------------------------------------------------------------------------------------------


def test_a_functional_loss_is_checked_against_ln_c_through_its_gradient(tmp_path: Path) -> None:
    _, x, y = digits()
    model = mlp()
    with torch.no_grad():
        model[-1].weight.mul_(40.0)  # confidently wrong at init
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with nndiag.watch(model, optimizer, out=tmp_path / "functional", plots=False, curves=False) as w:
        for xb, yb in loader(x, y):
            loss = F.cross_entropy(model(xb), yb)  # no loss module, no w.log: the gradient says it is a softmax cross-entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    check = w.result.results["check-loss"]
    assert codes(check) == ["initial-loss-high"] and check.metrics["expected_loss"] == pytest.approx(math.log(10))
    assert "cross-entropy" in check.metrics["expected_from"]
    assert check.metrics["initial_loss"] > 5 * math.log(10)


def test_a_loss_nndiag_cannot_read_is_said_and_num_classes_overrides(tmp_path: Path) -> None:
    _, x, y = digits()

    def run(name: str, log: bool, **options: Any) -> dict[str, Any]:
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        with nndiag.watch(model, optimizer, out=tmp_path / name, plots=False, curves=False, **options) as w:
            for xb, yb in loader(x, y):
                loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)  # its gradient is not plain cross-entropy's
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if log:
                    w.log(loss=loss)
        return next(s for s in w_summary(tmp_path / name)["steps"] if s["name"] == "check-loss")

    unseen = run("unseen", log=False)
    assert unseen["state"] == "skipped" and "w.log(loss=...)" in unseen["note"]
    unknown = run("unknown", log=True)
    assert [f["code"] for f in unknown["verdict"]["findings"]] == ["not-checked"] and "num_classes=" in unknown["verdict"]["metrics"][
        "expected_from"
    ]
    given = run("given", log=True, num_classes=10)["verdict"]
    assert (
        given["metrics"]["expected_loss"] == pytest.approx(math.log(10))
        and given["metrics"]["expected_from"] == "ln C = ln 10 (num_classes)"
    )
    assert given["status"] == "pass"


def w_summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


def test_fail_on_stops_the_loop_before_the_first_step_changes_the_weights(tmp_path: Path) -> None:
    _, x, y = digits()
    model = mlp()
    with torch.no_grad():
        model[-1].weight.mul_(70.0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(DiagnosisFailed) as caught:
        with nndiag.watch(model, optimizer, fail_on="fail", out=tmp_path / "fail", plots=False):
            train(model, optimizer, epochs=1)
    assert caught.value.stage == "check-loss" and [f.code for f in caught.value.findings] == ["initial-loss-high"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # raised from optimizer.step(), before it ran
    summary = w_summary(tmp_path / "fail")
    assert summary["metrics"]["stopped"] == "fail_on:check-loss" and (tmp_path / "fail" / "report.md").exists()
    for handles in (model._forward_hooks, model._forward_pre_hooks, optimizer._optimizer_step_pre_hooks):
        assert not handles  # every hook removed


# --------------------------------------------------------------------------------------------
# What the watch leaves alone, and what it writes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("probe_every", [None, 10])
def test_the_losses_are_bit_identical_with_and_without_the_watch(tmp_path: Path, probe_every: int | None) -> None:
    def run(watch: bool) -> list[float]:
        model = mlp(dropout=0.3)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.manual_seed(123)  # the dropout masks and the shuffling loader draw from here
        if not watch:
            return train(model, optimizer, epochs=2)
        with nndiag.watch(model, optimizer, probe_every=probe_every, out=tmp_path / f"watched-{probe_every}", plots=False) as w:
            return train(model, optimizer, epochs=2, w=w)

    plain, with_watch = run(False), run(True)
    assert len(plain) == 44 and plain == with_watch


def test_the_run_folder_is_babysits_and_the_loss_needs_no_w_log(tmp_path: Path) -> None:
    _, x, y = digits()
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    with nndiag.watch(model, optimizer, probe_every=20, out=tmp_path / "run") as w:
        for epoch in range(3):
            for xb, yb in loader(x, y, seed=epoch):
                loss = criterion(model(xb), yb)  # read by a hook on the loss module: no w.log
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    folder = tmp_path / "run"
    assert [p.name for p in sorted(folder.iterdir()) if p.is_dir()] == ["01-check-loss", "02-probe", "03-loop", "04-curves"]
    summary = w_summary(folder)
    assert summary["command"] == "watch" and summary["recipe"] == "python" and summary["status"] == w.result.status == "pass"
    assert set(summary) >= {"root_causes", "steps", "findings", "metrics", "outputs"} and (folder / "report.html").exists()
    assert summary["metrics"]["optimizer_steps"] == 66 and summary["metrics"]["probe.probed_steps"] == 3
    logged = w.result.results["curves"].tables["metrics"]
    assert logged["train_loss"].notna().sum() == 66  # every step's loss, from the hooks
    assert nndiag.curves(folder / "04-curves").status == "pass"  # metrics.csv reproduces the verdict


def test_advice_names_python_arguments_not_recipe_keys(tmp_path: Path) -> None:
    model, optimizer = sgd(lr=2.0)()  # diverges
    with nndiag.watch(model, optimizer, out=tmp_path / "diverges", plots=False) as w:
        train(model, optimizer, w=w, epochs=1)
    result = w.result
    assert "diverged" in codes(result) and result.root_causes[0]["cause"] == "lr-too-high"
    texts = [f.advice for f in result.findings] + [c["fix"] for c in result.root_causes]
    assert any("your optimizer's lr=" in t for t in texts) and any("clip_grad_norm_" in t for t in texts)
    assert not any(key in t for t in texts for key in ("optim.lr", "train.grad_clip", "`nndiag lr-find`"))
    report = (tmp_path / "diverges" / "report.md").read_text()
    assert "optim.lr" not in report and "your optimizer's lr=" in report
    assert report.startswith("# nndiag watch: ") and "Recipe: " not in report and "resolved recipe" not in report


def test_the_probe_of_a_trained_model_never_says_no_step_has_run(tmp_path: Path) -> None:
    """The issue's case: 16 steps at LR 3, then nndiag.probe on the model."""
    _, x, y = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=3.0)
    with nndiag.watch(model, optimizer, out=tmp_path / "lr3", plots=False, curves=False, check_loss=False):
        for i in range(16):
            loss = F.cross_entropy(model(x[i * 64 : (i + 1) * 64]), y[i * 64 : (i + 1) * 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert loop.steps_taken(model) == 16
    probed = nndiag.probe(model, (x, y), loss="cross_entropy")  # the watch counted the steps: trained
    dead = next(f for f in probed.findings if f.code == "dead-relu")
    assert dead.evidence["trained"] is True and "no optimizer step has run" not in " ".join(f.advice for f in probed.findings)
    assert "vanishing-activations" not in codes(probed)  # the depth rules judge an initialisation, not trained weights
    fresh = nndiag.probe(mlp(), (x, y), loss="cross_entropy", trained=False)
    assert fresh.status == "pass"


def test_bad_arguments_name_themselves() -> None:
    model = mlp()
    with pytest.raises(nndiag.BadInput, match="optimizer"):
        nndiag.watch(model, "adam")
    with pytest.raises(nndiag.BadInput, match="model"):
        nndiag.watch("mlp", torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(nndiag.BadInput, match="probe_every"):
        nndiag.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), probe_every=0)
    w = nndiag.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), out=None)
    with pytest.raises(nndiag.BadInput, match="outside"):
        w.log(loss=1.0)


def test_w_log_refuses_the_columns_the_watch_keeps_itself(tmp_path: Path) -> None:
    model = mlp()
    with nndiag.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), out=tmp_path / "w", plots=False) as w:
        for key in ("step", "lr"):
            with pytest.raises(nndiag.BadInput, match=f"w.log\\({key}="):
                w.log(**{key: 3})
        w.log(batch=3)  # any other name is a column of its own


def test_importing_nndiag_imports_no_torch_and_watch_is_there() -> None:
    import subprocess
    import sys

    code = "import sys, nndiag; assert callable(nndiag.watch); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# The rules alone (pure)
# --------------------------------------------------------------------------------------------


def facts(**changes: Any) -> dict[str, Any]:
    base = {
        "steps": 50,
        "forwards": 50,
        "nograd_train_forwards": 0,
        "logged_detached": 0,
        "trainable": 4,
        "in_optimizer": 4,
        "changed": 4,
        "lr_zero": False,
        "watched": ["2.bias"],
        "no_grad_steps": 0,
        "cleared_steps": 0,
        "first_no_grad_step": None,
        "checked_steps": 49,
        "accumulated_steps": 0,
        "first_accumulated_step": None,
        "grad_ratio_last": 1.0,
        "grad_ratio_max": 1.0,
        "eval_steps": 0,
        "first_eval_step": None,
        "mode_layers": ["1"],
        "fingerprinted": 35,
        "distinct_inputs": 35,
        "error": None,
        "backward_raised": False,
    }
    return {**base, **changes}


def test_decide_is_quiet_on_healthy_facts_and_each_rule_fires_at_its_threshold() -> None:
    assert loop.decide(facts()).findings == []
    assert loop.decide(facts(accumulated_steps=2, checked_steps=loop.ACCUMULATE_MIN_STEPS)).codes == ["grads-accumulate"]
    assert loop.decide(facts(accumulated_steps=1, checked_steps=loop.ACCUMULATE_MIN_STEPS)).codes == []
    assert loop.decide(facts(eval_steps=5, first_eval_step=46)).codes == ["eval-mode-training"]
    assert loop.decide(facts(eval_steps=4, first_eval_step=47)).codes == []  # under EVAL_SHARE of 50
    assert loop.decide(facts(eval_steps=50, first_eval_step=1, mode_layers=[])).codes == []  # nothing depends on the mode
    assert loop.decide(facts(distinct_inputs=1)).codes == ["same-batch-repeated"]
    assert loop.decide(facts(distinct_inputs=1, fingerprinted=loop.SAME_BATCH_MIN_FORWARDS - 1)).codes == []
    assert loop.decide(facts(changed=0)).codes == ["weights-unchanged"]
    assert loop.decide(facts(steps=0, forwards=loop.NO_STEP_MIN_FORWARDS, changed=0)).codes == ["no-optimizer-step"]
    moved = loop.decide(facts(steps=0, forwards=20, changed=4)).findings
    assert [(f.code, f.severity) for f in moved] == [("no-optimizer-step", "warn")]
    assert loop.decide(facts(steps=0, forwards=loop.NO_STEP_MIN_FORWARDS - 1, changed=0)).codes == []
    assert loop.decide(facts(no_grad_steps=25, first_no_grad_step=1)).codes == ["no-gradient-at-step"]
    assert loop.decide(facts(no_grad_steps=24, first_no_grad_step=1)).codes == []


def test_cross_entropy_targets_are_read_from_its_gradient_and_nothing_else_passes() -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, 5, requires_grad=True)
    targets = torch.randint(0, 5, (16,))
    targets[3] = -100
    for reduction in ("mean", "sum"):
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets, reduction=reduction), logits)
        found, axis = loop.cross_entropy_targets(logits.detach(), grad)
        assert axis == 1 and torch.equal(found, targets)
    tokens = torch.randn(2, 6, 7, requires_grad=True)  # a language model's (B, T, V) logits
    labels = torch.randint(0, 7, (2, 6))
    (grad,) = torch.autograd.grad(F.cross_entropy(tokens.reshape(-1, 7), labels.reshape(-1)), tokens)
    found, axis = loop.cross_entropy_targets(tokens.detach(), grad)
    assert axis == 2 and torch.equal(found, labels)
    for other in (F.mse_loss(logits, torch.zeros(16, 5)), F.cross_entropy(logits, targets.clamp(min=0), label_smoothing=0.1)):
        (grad,) = torch.autograd.grad(other, logits)
        assert loop.cross_entropy_targets(logits.detach(), grad) is None


def test_an_error_in_nndiags_own_hooks_never_stops_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, args: Any, kwargs: Any) -> None:
        raise ZeroDivisionError("a bug of nndiag's")

    monkeypatch.setattr(loop.Recorder, "_fingerprint", broken)
    model, optimizer = sgd()()
    with nndiag.watch(model, optimizer, out=tmp_path / "broken", plots=False) as w:
        losses = train(model, optimizer, w=w, epochs=1)
    assert len(losses) == 22  # the loop ran to its end
    stage = next(s for s in w.result.summary["steps"] if s["name"] == "loop")
    assert stage["state"] == "error" and "ZeroDivisionError" in stage["note"]
    assert not model._forward_pre_hooks and not optimizer._optimizer_step_post_hooks  # its hooks were removed at once
    model, optimizer = sgd()()
    with pytest.raises(ZeroDivisionError):  # with fail_on, nndiag's errors are raised as they are, for a CI job to see
        with nndiag.watch(model, optimizer, out=tmp_path / "strict", plots=False, fail_on="fail") as w:
            train(model, optimizer, w=w, epochs=1)


def test_cross_entropy_targets_are_read_under_half_precision_too() -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, 5, dtype=torch.bfloat16, requires_grad=True)  # what autocast hands a loss
    targets = torch.randint(0, 5, (16,))
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets), logits)
    found, _ = loop.cross_entropy_targets(logits.detach(), grad)
    assert torch.equal(found, targets)
    (grad,) = torch.autograd.grad(F.mse_loss(logits, torch.zeros_like(logits)), logits)
    assert loop.cross_entropy_targets(logits.detach(), grad) is None


def test_only_layers_that_compute_otherwise_in_eval_mode_count() -> None:
    assert loop.depends_on_mode(nn.Dropout(0.1)) and loop.depends_on_mode(nn.BatchNorm1d(4))
    assert not loop.depends_on_mode(nn.Dropout(0.0)) and not loop.depends_on_mode(nn.BatchNorm1d(4, track_running_stats=False))
    assert not loop.depends_on_mode(nn.InstanceNorm2d(4)) and not loop.depends_on_mode(nn.LayerNorm(4))


def test_adamw_in_a_watched_loop_is_not_regularization_without_effect(tmp_path: Path) -> None:
    """AdamW's decay adds no L2 term to the loss: the first batch's check says so (info), it does not warn."""
    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    with nndiag.watch(model, optimizer, out=tmp_path / "adamw", plots=False) as w:
        train(model, optimizer, w=w, epochs=1)
    assert codes(w.result) == [], [(f.code, f.message) for f in w.result.findings]
    info = next(f for f in w.result.findings if f.code == "not-checked")
    assert "decoupled" in info.message and info.evidence["decay_per_step"] == pytest.approx(1e-4)
    sgd_model = mlp()
    coupled = torch.optim.SGD(sgd_model.parameters(), lr=0.05, weight_decay=1e-9)  # an L2 term too small to matter: warned
    with nndiag.watch(sgd_model, coupled, out=tmp_path / "sgd", plots=False) as w:
        train(sgd_model, coupled, w=w, epochs=1)
    assert "regularization-no-effect" in codes(w.result)


def test_the_losses_the_hooks_read_are_read_back_as_the_run_goes(tmp_path: Path) -> None:
    """A long run keeps no loss tensor per step: every FLUSH_EVERY steps they come back as floats in one transfer."""
    _, x, y = digits()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    with nndiag.watch(model, optimizer, out=tmp_path / "long", plots=False) as w:
        for _ in range(6):
            for xb, yb in loader(x, y, batch_size=16):
                loss = criterion(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        recorder = w.session.recorder
        assert recorder.steps > 2 * loop.FLUSH_EVERY
        assert sum(isinstance(v, torch.Tensor) for _, v in recorder.losses) <= loop.FLUSH_EVERY
    assert w.result.summary["metrics"]["steps"]["curves"] == "pass"

"""nndiag inside PyTorch Lightning: the callback on real Trainer.fit runs (tiny models on CPU), and
nndiag.lr_find / check_loss on a LightningModule. Skipped when Lightning is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:
    pl = pytest.importorskip("pytorch_lightning")

from conftest import integrations_example

import nndiag
from nndiag.errors import BadInput
from nndiag.integrations import DiagnosisFailed
from nndiag.integrations import session as sessions
from nndiag.integrations.lightning import NNDiagCallback

pytestmark = pytest.mark.filterwarnings("ignore")  # Lightning's advice on workers and loggers


def blobs(n: int, seed: int, noise: float = 0.0, features: int = 10, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs; the label is a linear rule (`noise`: the fraction of labels flipped at random)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    score = x[:, 0] + 0.5 * x[:, 1]
    y = (score > 0).long() if classes == 2 else torch.bucketize(score, torch.linspace(-1.5, 1.5, classes - 1))
    flip = torch.rand(n, generator=g) < noise
    y[flip] = (y[flip] + 1) % classes
    return x, y


class Classifier(pl.LightningModule):
    """An MLP classifier that logs train_loss / train_acc per step and val_loss / val_acc per epoch."""

    def __init__(
        self,
        features: int = 10,
        hidden: tuple[int, ...] = (32,),
        classes: int = 2,
        lr: float = 1e-2,
        dropout: float = 0.0,
        expose_logits: bool = False,
        metric: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, classes))
        self.lr, self.expose_logits = lr, expose_logits
        self.accuracy = None
        if metric:
            import torchmetrics

            self.accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes=classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        if self.accuracy is not None:
            self.accuracy(logits, y)
            self.log("train_acc", self.accuracy, on_step=False, on_epoch=True)
        else:
            self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return {"loss": loss, "logits": logits, "targets": y} if self.expose_logits else loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loaders(train: tuple, val: tuple, batch_size: int) -> tuple[DataLoader, DataLoader]:
    return DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True), DataLoader(TensorDataset(*val), batch_size=256)


def trainer(epochs: int, callbacks: list[Any], **options: Any) -> Any:
    settings = dict(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    settings.update(options)
    return pl.Trainer(callbacks=callbacks, **settings)


def fit(module: Any, train: tuple, val: tuple, *, epochs: int, batch_size: int, **callback_options: Any) -> tuple[NNDiagCallback, Any]:
    pl.seed_everything(0, verbose=False)
    callback = NNDiagCallback(plots=False, **callback_options)
    run = trainer(epochs, [callback])
    run.fit(module, *loaders(train, val, batch_size))
    return callback, run


def codes(summary: dict[str, Any], stage: str | None = None) -> list[str]:
    return [f["code"] for f in summary["findings"] if stage is None or f["step"] == stage]


# --------------------------------------------------------------------------------------------
# The callback: curves, check-loss, fail_on, probe
# --------------------------------------------------------------------------------------------


def test_a_run_that_memorises_30_examples_gets_overfitting() -> None:
    torch.manual_seed(0)
    module = Classifier(hidden=(256, 256), lr=3e-3)  # big, no regularization, 20% of the labels flipped
    callback, run = fit(module, blobs(30, 0, noise=0.2), blobs(300, 1, noise=0.2), epochs=60, batch_size=10, num_classes=2)
    summary = callback.summary
    assert codes(summary, "curves") == ["overfitting"], summary["findings"]
    assert summary["status"] == "warn" and summary["metrics"]["steps"] == {"check-loss": "pass", "loop": "pass", "curves": "warn"}
    assert summary["metrics"]["optimizer_steps"] == run.global_step == 180 and summary["metrics"]["stopped"] == "completed"
    logged = callback.results["curves"].tables["metrics"]
    assert logged["train_loss"].notna().sum() == 180 and logged["val_loss"].notna().sum() == 60  # every step, every epoch


def test_a_healthy_run_gets_no_findings_and_writes_the_cli_run_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback, run = fit(Classifier(), blobs(800, 0), blobs(300, 1), epochs=6, batch_size=32, num_classes=2)
    summary = callback.summary
    assert summary["status"] == "pass" and summary["findings"] == [], summary["findings"]
    assert summary["metrics"]["check-loss.expected_loss"] == pytest.approx(math.log(2))
    assert summary["metrics"]["check-loss.expected_from"] == "ln C = ln 2 (num_classes)"
    folder = callback.folder
    assert folder.parent == tmp_path / "runs" / "Classifier" and folder.name.startswith("lightning-")  # runs/<module class>/lightning-<ts>/
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk == summary and set(on_disk) >= {"command", "recipe", "status", "findings", "metrics", "outputs"}
    assert on_disk["command"] == "lightning" and on_disk["recipe"] == "python"
    for index, stage in enumerate(["check-loss", "loop", "curves"], start=1):
        sub = folder / f"{index:02d}-{stage}"
        assert json.loads((sub / "summary.json").read_text())["command"] == stage
        assert on_disk["outputs"]["steps"][stage] == str(sub / "summary.json")
    assert (folder / "01-check-loss" / "check_loss.csv").exists() and (folder / "03-curves" / "metrics.csv").exists()
    assert (folder / "02-loop" / "loop.csv").exists()  # one row per optimizer step: what the loop's hooks saw
    again = nndiag.curves(folder / "03-curves")  # the saved metrics reproduce the verdict
    assert again.status == "pass" and again.metrics["final_val_acc"] == summary["metrics"]["curves.final_val_acc"]


def test_fail_on_stops_a_run_whose_initial_loss_is_ten_times_too_high() -> None:
    torch.manual_seed(0)
    module = Classifier(classes=10)
    with torch.no_grad():
        module.net[-1].weight.mul_(70.0)  # a last layer initialised far too large: ~10x ln 10
    x, y = blobs(400, 0, classes=10)
    callback = NNDiagCallback(num_classes=10, fail_on="fail", plots=False)
    run = trainer(5, [callback])
    with pytest.raises(DiagnosisFailed) as caught:
        run.fit(module, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    error = caught.value
    assert run.global_step == 0  # stopped before the first training step
    assert error.stage == "check-loss" and error.status == "fail" and [f.code for f in error.findings] == ["initial-loss-high"]
    assert "initial-loss-high" in str(error) and "summary.json" in str(error)
    ratio = error.findings[0].evidence["ratio"]
    assert 9 < ratio < 15, ratio
    summary = json.loads((error.folder / "summary.json").read_text())
    assert summary["status"] == "fail" and summary["metrics"]["stopped"] == "fail_on:check-loss" and codes(summary) == ["initial-loss-high"]
    assert (error.folder / "report.md").read_text().startswith("# nndiag lightning") and (error.folder / "report.html").exists()
    assert summary["root_causes"][0]["cause"] == "output-too-large"  # stopped by fail_on, the report still ranks the cause


def test_without_fail_on_a_failing_check_loss_lets_training_go_on() -> None:
    torch.manual_seed(0)
    module = Classifier(classes=10, expose_logits=True)  # C = 10 from the logits: no num_classes needed
    with torch.no_grad():
        module.net[-1].weight.mul_(40.0)
    x, y = blobs(200, 0, classes=10)
    callback, run = fit(module, (x, y), (x[:50], y[:50]), epochs=1, batch_size=50, curves=False)
    assert run.global_step == 4 and callback.summary["status"] == "fail" and codes(callback.summary) == ["initial-loss-high"]
    assert callback.summary["metrics"]["check-loss.expected_from"].startswith("ln C = ln 10, C from the logits")


class Regressor(pl.LightningModule):
    """A training_step that returns only an MSE loss on real-valued targets: no class logits to find."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(10, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return F.mse_loss(self.net(x).squeeze(1), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=1e-2)


def test_a_training_step_that_returns_only_its_loss_is_checked_against_ln_c() -> None:
    """The logits come from the module's own forward, caught by a forward hook: no num_classes, no logits returned."""
    torch.manual_seed(0)
    module = Classifier(classes=10)  # training_step returns `loss` only
    with torch.no_grad():
        module.net[-1].weight.mul_(70.0)  # ~17x ln 10, the case
    x, y = blobs(400, 0, classes=10)
    callback = NNDiagCallback(fail_on="fail", plots=False)
    run = trainer(5, [callback])
    with pytest.raises(DiagnosisFailed) as caught:
        run.fit(module, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    assert run.global_step == 0 and [f.code for f in caught.value.findings] == ["initial-loss-high"]
    assert callback.summary["metrics"]["check-loss.expected_from"].startswith("ln C = ln 10, C from the logits")
    torch.manual_seed(0)
    healthy, _ = fit(Classifier(), blobs(96, 0), blobs(32, 1), epochs=1, batch_size=32, curves=False)
    assert healthy.summary["status"] == "pass" and healthy.summary["findings"] == []
    assert healthy.summary["metrics"]["check-loss.expected_loss"] == pytest.approx(math.log(2))


def test_check_loss_says_what_it_could_not_check_without_logits_or_num_classes() -> None:
    torch.manual_seed(0)
    x = torch.randn(96, 10)
    callback, _ = fit(Regressor(), (x, x[:, 0]), (x[:32], x[:32, 0]), epochs=1, batch_size=32, curves=False, loop=False)
    check = callback.summary["findings"]
    assert [(f["code"], f["severity"]) for f in check] == [("not-checked", "info")] and callback.summary["status"] == "pass"
    assert "no logits" in check[0]["message"]


def test_the_callback_does_not_change_the_training(tmp_path: Path) -> None:
    """Seeded runs with and without the callback (check-loss and curves on, probing off): dropout, a
    shuffling loader and a torchmetrics accuracy, and the same logged numbers, step for step."""
    x, y = blobs(256, 0)

    def run(with_callback: bool, folder: str) -> tuple[Any, dict[str, torch.Tensor]]:
        pl.seed_everything(0, verbose=False)
        module = Classifier(hidden=(32, 32), dropout=0.3, metric=True)
        logger = pl.loggers.CSVLogger(str(tmp_path), name=folder)
        callbacks = [NNDiagCallback(num_classes=2, plots=False)] if with_callback else []
        train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
        run = trainer(3, callbacks, logger=logger, log_every_n_steps=1)
        run.fit(module, train, DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64))
        import pandas as pd

        return pd.read_csv(Path(logger.log_dir) / "metrics.csv"), {k: v.clone() for k, v in module.state_dict().items()}

    plain, plain_weights = run(False, "plain")
    watched, watched_weights = run(True, "watched")
    columns = ["step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert watched["nndiag/status"].dropna().tolist() == [0.0]  # the status, logged once at the end
    logged = watched.drop(columns=["nndiag/status"]).dropna(how="all", subset=columns[2:])[columns].reset_index(drop=True)
    assert logged.astype(float).equals(plain[columns].reset_index(drop=True).astype(float))  # the status row made epoch a float column
    assert plain["train_loss"].notna().sum() == 24 and plain["train_acc"].notna().sum() == 3  # every step; the metric per epoch
    assert all(torch.equal(plain_weights[k], watched_weights[k]) for k in plain_weights)


def test_a_resumed_run_skips_check_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(*blobs(64, 0)), batch_size=32)
    first = trainer(1, [], enable_checkpointing=True, default_root_dir=str(tmp_path))
    first.fit(Classifier(), train)
    checkpoint = first.checkpoint_callback.best_model_path
    callback = NNDiagCallback(num_classes=2, curves=False, fail_on="fail", plots=False)
    trainer(2, [callback]).fit(Classifier(), train, ckpt_path=checkpoint)
    stage = callback.summary["steps"][0]
    assert (stage["name"], stage["state"]) == ("check-loss", "skipped") and "resumed at step 2" in stage["note"]


def test_check_loss_hands_back_weights_gradients_modes_metrics_and_rngs() -> None:
    torch.manual_seed(0)
    module = Classifier(hidden=(16,), dropout=0.5, metric=True)
    x, y = blobs(64, 0)
    module.accuracy(module(x), y)  # a metric with state
    module(x).sum().backward()  # gradients present
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    optimizer.step()  # momentum buffers: an optimizer with state, as the trainer's is
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in module.parameters()]
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    grads = [p.grad.clone() for p in module.parameters()]
    metric = {k: v.clone() for k, v in module.accuracy.metric_state.items()}
    rng = torch.get_rng_state()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    from nndiag.integrations.lightning import training_step_of

    result = sessions.check_loss(
        module,
        sessions.private_loader(loader, None, 0),
        step=training_step_of(module),
        optimizer=optimizer,
        options=sessions.Options(num_classes=2, batches=3),
    )
    assert all(torch.equal(m, optimizer.state[p]["momentum_buffer"]) for m, p in zip(momentum, module.parameters()))
    assert result.metrics["l2_penalty"] > 0  # its weight decay was read
    assert result.metrics["batches"] == 3 and result.metrics["expected_loss"] == pytest.approx(math.log(2))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, module.parameters()))
    assert not module.training and all(not m.training for m in module.modules())
    assert all(torch.equal(metric[k], v) for k, v in module.accuracy.metric_state.items())
    assert torch.equal(rng, torch.get_rng_state())
    assert "log" not in module.__dict__  # self.log is Lightning's own again


class Saturating(Classifier):
    """tanh layers initialised 5x too large: saturated from the first step."""

    def __init__(self) -> None:
        super().__init__(hidden=(64, 64, 64))
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.ReLU):
                self.net[i] = nn.Tanh()
            elif isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=5.0 / math.sqrt(layer.in_features))


def test_probe_every_n_steps_finds_saturation_and_fail_on_stops_at_the_probed_step() -> None:
    torch.manual_seed(0)
    callback = NNDiagCallback(probe_every=5, check_loss=False, curves=False, fail_on="fail", plots=False)
    run = trainer(3, [callback])
    module = Saturating()
    with pytest.raises(DiagnosisFailed) as caught:
        run.fit(module, DataLoader(TensorDataset(*blobs(320, 0)), batch_size=32, shuffle=True))
    assert caught.value.stage == "probe" and "saturated-activations" in [f.code for f in caught.value.findings]
    assert run.global_step == 5
    probed = callback.results["probe"].tables["probe"]
    assert probed["step"].unique().tolist() == [5]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())  # no hooks left behind


def test_probe_on_a_healthy_run_probes_every_n_steps_quietly() -> None:
    torch.manual_seed(0)
    module = Classifier(hidden=(64, 64))
    callback, run = fit(module, blobs(320, 0), blobs(64, 1), epochs=3, batch_size=32, probe_every=10, check_loss=False, curves=False)
    probe = callback.results["probe"]
    assert probe.tables["probe"]["step"].unique().tolist() == [10, 20, 30] and probe.status == "pass", probe.findings
    assert callback.summary["metrics"]["probe.probed_steps"] == 3
    assert all(not m._forward_hooks for m in module.modules())


class Scheduled(Classifier):
    """A StepLR sized in epochs (step_size=3), handed to Lightning with interval "step" or "epoch"."""

    def __init__(self, interval: str) -> None:
        super().__init__(lr=3e-2)
        self.interval = interval

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


def test_the_loop_stage_runs_in_lightning_too_a_schedule_stepped_per_batch_collapses() -> None:
    torch.manual_seed(0)
    callback, run = fit(Scheduled("step"), blobs(640, 0), blobs(128, 1), epochs=4, batch_size=32, num_classes=2)
    summary = callback.summary
    assert "lr-schedule-collapses" in codes(summary, "curves") and summary["root_causes"][0]["cause"] == "schedule-collapses"
    assert summary["metrics"]["steps"]["loop"] == "pass" and callback.result.root_causes == summary["root_causes"]
    logged = callback.results["curves"].tables["metrics"]
    assert logged["lr"].notna().sum() == run.global_step == 80 and logged["lr"].iloc[0] == pytest.approx(3e-2)
    advice = " ".join(f["advice"] for f in summary["findings"]) + " ".join(c["fix"] for c in summary["root_causes"])
    assert "optim.lr" not in advice and "train.grad_clip" not in advice  # a Python user's words
    torch.manual_seed(0)
    per_epoch, _ = fit(Scheduled("epoch"), blobs(640, 0), blobs(128, 1), epochs=4, batch_size=32, num_classes=2)
    assert "lr-schedule-collapses" not in codes(per_epoch.summary)


def test_bad_options_name_the_argument() -> None:
    with pytest.raises(BadInput, match="fail_on"):
        NNDiagCallback(fail_on="always")
    with pytest.raises(BadInput, match="probe_every"):
        NNDiagCallback(probe_every=0)
    with pytest.raises(BadInput, match="num_classes"):
        NNDiagCallback(num_classes=1)
    with pytest.raises(TypeError):
        NNDiagCallback(True)  # type: ignore[misc]  # keyword only


# --------------------------------------------------------------------------------------------
# nndiag.lr_find and friends on a LightningModule
# --------------------------------------------------------------------------------------------


class WithData(Classifier):
    """A module with its own train_dataloader (450 examples: 15 batches of 32) and a warm-up scheduler."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = blobs(450, 0, classes=3)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.data), batch_size=32, shuffle=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def test_lr_find_on_a_lightning_module_with_450_examples() -> None:
    torch.manual_seed(0)
    module = WithData(classes=3, lr=0.05)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    result = nndiag.lr_find(module)
    assert result.metrics["suggested_lr"] is not None and result.metrics["points"] >= 90, result.metrics  # 100 points from 15 batches
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and module.training
    assert result.context["model"].startswith("WithData") and "your step" in result.context["model"]


def test_lr_find_on_a_module_hands_back_the_optimizer_it_was_given() -> None:
    torch.manual_seed(0)
    module = WithData(classes=3)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module(module.data[0][:8]).sum().backward()
    optimizer.step()  # an optimizer with state
    state = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()} for k, v in optimizer.state_dict()["state"].items()}
    result = nndiag.lr_find(module, optimizer, data=DataLoader(TensorDataset(*module.data), batch_size=32, shuffle=True), steps=40)
    assert result.metrics["points"] >= 20 and optimizer.param_groups[0]["lr"] == 1e-3
    after = optimizer.state_dict()["state"]
    assert all(torch.equal(state[k]["exp_avg"], after[k]["exp_avg"]) for k in state)


def test_check_loss_and_probe_on_a_lightning_module_use_its_training_step() -> None:
    torch.manual_seed(0)
    module = WithData(classes=3, expose_logits=True)
    check = nndiag.check_loss(module)
    assert check.status == "pass" and check.metrics["expected_loss"] == pytest.approx(math.log(3))
    assert "your step" in check.context["model"]
    assert nndiag.probe(module).status == "pass"


def test_a_datamodule_is_data_too() -> None:
    class Blobs(pl.LightningDataModule):
        def setup(self, stage: str) -> None:
            self.train = TensorDataset(*blobs(128, 0))

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train, batch_size=32)

    torch.manual_seed(0)
    result = nndiag.check_loss(Classifier(expose_logits=True), data=Blobs(), batches=2)
    assert result.metrics["batches"] == 2 and result.metrics["expected_loss"] == pytest.approx(math.log(2))


def test_a_module_without_data_or_with_manual_optimization_is_bad_input() -> None:
    with pytest.raises(BadInput, match="data"):
        nndiag.lr_find(Classifier())
    manual = WithData()
    manual.automatic_optimization = False
    with pytest.raises(BadInput, match="manual optimization"):
        nndiag.check_loss(manual)


# --------------------------------------------------------------------------------------------
# Without Lightning
# --------------------------------------------------------------------------------------------


def test_without_lightning_the_import_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, cli: Any, write_recipe: Any, tmp_path: Path
) -> None:
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    monkeypatch.delitem(sys.modules, "nndiag.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'nndiag\[lightning\]'"):
        importlib.import_module("nndiag.integrations.lightning")
    # a CLI path that reaches it (a recipe's model target imports the callback): exit 2 with the message
    (tmp_path / "my_model.py").write_text(
        "from nndiag.integrations.lightning import NNDiagCallback\ndef build(**kwargs):\n    raise AssertionError('not reached')\n"
    )
    from conftest import SPIRAL_MLP, recipe_dict

    path = write_recipe(recipe_dict(SPIRAL_MLP, **{"model": {"target": "my_model:build"}}))
    result = cli("check-loss", path)
    assert result.exit_code == 2 and "pip install 'nndiag[lightning]'" in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr


def test_importing_nndiag_imports_no_framework() -> None:
    import subprocess

    code = (
        "import sys, nndiag, nndiag.integrations; "
        "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def load_example(name: str) -> Any:
    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_example_runs_and_writes_its_run_folder(tmp_path: Path) -> None:
    example = load_example("lightning_callback.py")
    assert example.main(["--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "pass" and summary["metrics"]["steps"] == {
        "check-loss": "pass",
        "probe": "pass",
        "loop": "pass",
        "curves": "pass",
    }
    for stage, files in {
        "01-check-loss": ["check_loss.csv"],
        "02-probe": ["probe.csv", "probe.png"],
        "03-loop": ["loop.csv"],
        "04-curves": ["metrics.csv", "curves.png"],
    }.items():
        assert all((tmp_path / "run" / stage / name).exists() for name in [*files, "summary.json"]), stage


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Lightning's default logger and checkpoints land here
    scope: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(integrations_example("## PyTorch Lightning"), "docs/integrations.md", "exec"), scope)
    callback = scope["callback"]
    assert callback.summary["status"] == "pass", callback.summary["findings"]
    assert callback.folder.parent == tmp_path / "runs" / "Classifier" and (callback.folder / "summary.json").exists()


def test_the_callbacks_metrics_are_on_disk_while_training_runs(tmp_path):
    """metrics.csv in the run folder grows epoch by epoch and summary.json names the live process, so `nndiag curves`
    reads a fit that is still running (or was killed) and says so."""
    import os

    from nndiag.diagnostics import curves

    seen: list[dict] = []
    seen_first: list[str] = []

    class Look(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:  # before any stage ends: already a running run
            seen_first.append(json.loads((nndiag_callback.folder / "summary.json").read_text())["run"]["state"])

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            folder = nndiag_callback.folder
            lines = (folder / "metrics.csv").read_text().splitlines()
            summary = json.loads((folder / "summary.json").read_text())
            verdict = curves.run([folder]) if trainer.current_epoch == 2 else None
            seen.append({"rows": len(lines) - 1, "cells": {len(line.split(",")) for line in lines}, "summary": summary, "verdict": verdict})

    pl.seed_everything(0, verbose=False)
    nndiag_callback = NNDiagCallback(plots=False, out=tmp_path / "run", check_loss=False)  # no stage has ended at the start
    train, val = blobs(256, 0), blobs(128, 1)
    trainer(4, [nndiag_callback, Look()]).fit(Classifier(), *loaders(train, val, 32))
    steps_per_epoch = 256 // 32
    assert [s["rows"] for s in seen][:3] == [steps_per_epoch - 1, 2 * steps_per_epoch - 1, 3 * steps_per_epoch - 1]  # closed steps
    assert all(s["cells"] == {6} for s in seen)  # whole rows: step, epoch and the four series
    assert seen_first == ["running"]
    live = seen[2]["summary"]["run"]
    assert live["state"] == "running" and live["pid"] == os.getpid()
    finding = next(f for f in seen[2]["verdict"].findings if f.code == "run-incomplete")
    assert finding.severity == "info"
    final = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert final["metrics"]["stopped"] == "completed"
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) - 1 == 4 * steps_per_epoch

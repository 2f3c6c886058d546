"""curves: every rule on synthetic curves (must trigger / healthy must not), CSV formats, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from curvegen import make

from nndiag.diagnostics import curves
from nndiag.diagnostics.curves import Curves, decide
from nndiag.findings import CODES

LENGTHS = [(2000, None), (300, None), (2000, 20), (500, 50), (400, 12)]  # (steps, epochs with validation)


@pytest.mark.parametrize("n,epochs", LENGTHS)
@pytest.mark.parametrize("seed", range(5))
def test_healthy_curve_raises_nothing(n, epochs, seed):
    verdict = decide(make("healthy", n, seed, epochs))
    assert verdict.findings == [] and verdict.status == "pass"


def test_healthy_short_train_only_curve_raises_nothing():
    for seed in range(5):
        assert decide(make("healthy", 60, seed)).codes == []


# kind -> (code it must raise, lengths where it must be found in every seed)
EXPECTED = {
    "overfitting": ("overfitting", [(2000, 20), (500, 50), (400, 12)]),
    "overfitting-gap": ("overfitting", [(2000, 20), (500, 50), (400, 12)]),
    "underfitting": ("underfitting", [(2000, 20), (500, 50), (400, 12)]),
    "still-improving": ("still-improving", [(2000, None), (300, None)]),
    "diverged-nan": ("diverged", LENGTHS),
    "diverged-blowup": ("diverged", LENGTHS),
    "plateau": ("plateau", [(2000, None), (300, None), (60, None)]),
    "flat": ("plateau", [(2000, None), (300, None)]),
    "lr-too-low": ("lr-too-low", LENGTHS),
    "lr-too-high": ("lr-too-high", [(2000, None), (300, None)]),
    "bad-init": ("bad-init", LENGTHS),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_is_diagnosed(kind):
    code, lengths = EXPECTED[kind]
    for n, epochs in lengths:
        for seed in range(4):
            verdict = decide(make(kind, n, seed, epochs))
            assert code in verdict.codes, (kind, n, epochs, seed, verdict.codes)
            assert set(verdict.codes) <= set(CODES["curves"])


def test_still_improving_on_validation_curves():
    hits = sum("still-improving" in decide(make("still-improving", 2000, seed, 20)).codes for seed in range(6))
    assert hits >= 5


def test_noisy_is_found_in_most_seeds_and_quotes_the_ratio():
    hits = [decide(make("noisy", 2000, seed)) for seed in range(6)]
    assert sum("noisy" in v.codes for v in hits) >= 5
    finding = next(f for v in hits for f in v.findings if f.code == "noisy")
    assert finding.evidence["ratio"] >= curves.NOISY_RATIO and "%" in finding.message


def test_diverged_is_fail_and_alone():
    verdict = decide(make("diverged-nan", 2000, 0, 20))
    assert verdict.codes == ["diverged"] and verdict.status == "fail" and verdict.exit_code == 1
    assert "nan" in verdict.findings[0].message.lower() and "step 1401" in verdict.findings[0].message


def test_overfitting_message_quotes_numbers():
    verdict = decide(make("overfitting", 2000, 0, 20))
    message = next(f.message for f in verdict.findings if f.code == "overfitting")
    assert "val loss rose" in message and "from its minimum" in message and "epoch" in message and "train loss fell" in message


def test_scale_invariance():
    base = make("overfitting", 500, 1, 20)
    scaled = Curves(
        x=base.x, dense=base.dense * 1000, fit={k: (v * 1000 if "loss" in k else v) for k, v in base.fit.items()}, fit_x=base.fit_x
    )
    assert decide(base).codes == decide(scaled).codes


def test_val_only_noise_does_not_fake_overfitting():
    e = np.arange(1, 41, dtype=float)
    rng = np.random.default_rng(0)
    train = 0.3 + 2.0 * np.exp(-e / 5)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        val = train * 1.1 * np.exp(0.04 * rng.standard_normal(40))
        c = Curves(fit={"train_loss": pd.Series(train, index=e), "val_loss": pd.Series(val, index=e)}, fit_x="epoch")
        assert "overfitting" not in decide(c).codes


def test_too_short_curve_is_quiet():
    assert decide(Curves(dense=pd.Series([2.3, 2.0, 1.5], index=[1.0, 2.0, 3.0]))).codes == []


# -- reading CSV files ------------------------------------------------------------------------------


def write_lightning_metrics(path, epochs=15, steps_per_epoch=20, log_every=5, seed=0):
    """Rows as Lightning's CSVLogger writes them: training rows (epoch, step, train_loss) every
    `log_every` steps, and validation rows (epoch, step, val_loss, val_acc) at each epoch end, blanks elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(epochs):
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            if (step + 1) % log_every == 0:
                loss = (0.2 + 2.1 * math.exp(-step / 40)) * math.exp(0.1 * rng.standard_normal())
                rows.append({"epoch": epoch, "step": step, "train_loss": f"{loss:.5f}", "val_acc": "", "val_loss": ""})
        step = (epoch + 1) * steps_per_epoch - 1
        val = 0.35 + 2.0 * math.exp(-step / 40) + 0.004 * max(0, epoch - 5) ** 2
        rows.append(
            {"epoch": epoch, "step": step, "train_loss": "", "val_acc": f"{min(0.95, 0.3 + epoch * 0.1):.4f}", "val_loss": f"{val:.5f}"}
        )
    pd.DataFrame(rows, columns=["epoch", "step", "train_loss", "val_acc", "val_loss"]).to_csv(path, index=False)
    return path


def test_lightning_metrics_csv(tmp_path):
    path = write_lightning_metrics(tmp_path / "metrics.csv")
    [run] = curves.load([path])
    assert run.x == "step" and len(run.dense) == 60 and len(run.fit["val_loss"]) == 15
    assert not run.dense.isna().any()  # blanks are "not logged", not NaN
    verdict = decide(run)
    assert "overfitting" in verdict.codes and "step" in verdict.findings[0].message


def test_generic_keras_like_csv(tmp_path):
    e = np.arange(1, 21)
    loss = 0.1 + 2 * np.exp(-e / 3)
    frame = pd.DataFrame({"epoch": e, "loss": loss, "val_loss": loss * 1.05, "accuracy": 1 - loss / 3, "val_accuracy": 1 - loss / 3 - 0.01})
    frame.to_csv(tmp_path / "history.csv", index=False)
    [run] = curves.load([tmp_path / "history.csv"])
    assert run.x == "epoch" and set(run.fit) == {"train_loss", "val_loss", "train_acc", "val_acc"}
    assert decide(run).codes == []


def test_slash_names_and_flags(tmp_path):
    frame = pd.DataFrame({"it": range(50), "train/loss": np.linspace(2, 1, 50), "valid/ce": np.linspace(2.1, 1.1, 50)})
    frame.to_csv(tmp_path / "log.csv", index=False)
    [run] = curves.load([tmp_path / "log.csv"])
    assert run.x == "it" and "val_loss" not in run.fit
    [run] = curves.load([tmp_path / "log.csv"], x="it", train="train/loss", val="valid/ce")
    assert len(run.fit["val_loss"]) == 50


def test_logged_nan_is_divergence(tmp_path):
    (tmp_path / "a.csv").write_text("step,loss\n" + "".join(f"{i},{2.0 - i * 0.01}\n" for i in range(1, 40)) + "40,nan\n")
    [run] = curves.load([tmp_path / "a.csv"])
    assert decide(run).codes == ["diverged"]


@pytest.mark.parametrize(
    "content,words",
    [
        ("step,foo,bar\n1,2,3\n", ["no loss column", "step, foo, bar", "--train"]),
        ("step,loss\n1,abc\n", ["non-number", "'abc'", "loss"]),
        ("step,loss\n", ["no rows"]),
        ("", ["not a readable CSV"]),
    ],
)
def test_bad_files_exit_2(tmp_path, cli, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = cli("curves", path)
    assert result.exit_code == 2
    assert str(path) in result.stderr.replace("\n", "") or "bad.csv" in result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr.replace("\n", " "), result.stderr


def test_missing_file_and_unknown_column_exit_2(tmp_path, cli):
    assert cli("curves", tmp_path / "nope.csv").exit_code == 2
    path = write_lightning_metrics(tmp_path / "metrics.csv")
    result = cli("curves", path, "--val", "val/loss")
    assert result.exit_code == 2 and "val/loss" in result.stderr


def test_cli_json_is_one_object_and_writes_folder(tmp_path, cli):
    path = write_lightning_metrics(tmp_path / "metrics.csv")
    out = tmp_path / "out"
    result = cli("curves", path, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["command"] == "curves" and verdict["status"] == "warn"
    assert [f["code"] for f in verdict["findings"]] == ["overfitting"]
    assert (out / "curves.csv").exists() and (out / "summary.json").exists() and (out / "curves.png").exists()


def test_cli_human_output_and_default_folder(tmp_path, cli):
    write_lightning_metrics(tmp_path / "metrics.csv")
    result = cli("curves", tmp_path, "--no-plots")  # a run folder holding metrics.csv
    assert result.exit_code == 0 and "overfitting" in result.stdout and "val loss" in result.stdout
    assert list((tmp_path / "runs" / "curves").glob("curves-*/summary.json"))


def test_several_runs_are_named(tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_lightning_metrics(tmp_path / "a" / "metrics.csv")
    e = np.arange(1, 30)
    pd.DataFrame({"step": e, "loss": 2.3 * (1 - 0.01 * e)}).to_csv(tmp_path / "b" / "flat.csv", index=False)
    result = cli("curves", tmp_path / "a" / "metrics.csv", tmp_path / "b" / "flat.csv", "--json", "--no-plots")
    verdict = json.loads(result.stdout)
    messages = [f["message"] for f in verdict["findings"]]
    assert any(m.startswith("[a]") for m in messages) and any(m.startswith("[flat]") for m in messages)


def test_a_non_finite_validation_loss_is_divergence():
    e = np.arange(1, 21, dtype=float)
    train = 0.3 + 2.0 * np.exp(-e / 5)
    val = train * 1.1
    val[12] = math.nan
    c = Curves(fit={"train_loss": pd.Series(train, index=e), "val_loss": pd.Series(val, index=e)}, fit_x="epoch")
    verdict = decide(c)
    assert verdict.codes == ["diverged"] and "val" in verdict.findings[0].message.lower()


def test_a_loss_gap_without_accuracies_is_overfitting():
    """Train falls far below validation (no accuracy logged), from curves that started together."""
    e = np.arange(1, 61, dtype=float)
    train = 0.05 + 2.0 * np.exp(-e / 10)
    val = 0.6 + 1.5 * np.exp(-e / 10)
    c = Curves(fit={"train_loss": pd.Series(train, index=e), "val_loss": pd.Series(val, index=e)}, fit_x="epoch")
    finding = next(f for f in decide(c).findings if f.code == "overfitting")
    assert "loss gap opened" in finding.message
    together = Curves(fit={"train_loss": pd.Series(train, index=e), "val_loss": pd.Series(train * 1.05, index=e)}, fit_x="epoch")
    assert "overfitting" not in decide(together).codes


# -- issue 19: lr-schedule-collapses, from a log's lr column -------------------------------------------------


def _lrs(make_scheduler, steps: int, per: int = 1, lr: float = 0.1) -> np.ndarray:
    """The LR of each of `steps` optimizer steps under a torch scheduler stepped every `per` steps."""
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    out = []
    for step in range(1, steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if step % per == 0:
            scheduler.step()
    return np.array(out)


def _with_lr(lrs: np.ndarray, seed: int = 0) -> Curves:
    run = make("healthy", len(lrs), seed)
    run.lr = pd.Series(lrs, index=np.arange(1, len(lrs) + 1, dtype=float))
    return run


def _schedules():
    import torch.optim.lr_scheduler as S

    per_batch = 30  # a 10-epoch run of 30 batches: 300 optimizer steps
    collapsing = {  # sized in epochs, stepped every batch
        "step-per-batch": _lrs(lambda o: S.StepLR(o, step_size=3, gamma=0.1), 10 * per_batch),
        "exponential-per-batch": _lrs(lambda o: S.ExponentialLR(o, gamma=0.9), 10 * per_batch),
        "multistep-per-batch": _lrs(lambda o: S.MultiStepLR(o, milestones=[3, 6, 9, 12], gamma=0.1), 10 * per_batch),
    }
    healthy = {
        "constant": np.full(10 * per_batch, 0.1),
        "step-per-epoch": _lrs(lambda o: S.StepLR(o, step_size=3, gamma=0.1), 10 * per_batch, per=per_batch),
        "cosine-to-zero": _lrs(lambda o: S.CosineAnnealingLR(o, T_max=10 * per_batch), 10 * per_batch),
        "resnet-steps": _lrs(lambda o: S.MultiStepLR(o, milestones=[30, 60, 80], gamma=0.1), 90 * 10, per=10),
        "one-cycle": _lrs(lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10 * per_batch), 10 * per_batch),
        "warmup-then-linear-to-zero": np.concatenate([np.linspace(0, 0.1, 30), np.linspace(0.1, 0, 270)]),
        "warm-restarts": _lrs(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=50), 10 * per_batch),
    }
    return collapsing, healthy


def test_an_lr_schedule_that_collapses_early_is_found_and_healthy_schedules_are_not():
    collapsing, healthy = _schedules()
    for name, lrs in collapsing.items():
        verdict = decide(_with_lr(lrs))
        assert "lr-schedule-collapses" in verdict.codes, name
        finding = next(f for f in verdict.findings if f.code == "lr-schedule-collapses")
        assert finding.severity == "warn" and finding.evidence["collapsed_u"] <= curves.LR_COLLAPSE_BY, name
    for name, lrs in healthy.items():
        assert "lr-schedule-collapses" not in decide(_with_lr(lrs)).codes, name
    assert decide(_with_lr(collapsing["step-per-batch"][: curves.LR_COLLAPSE_MIN_POINTS - 1])).codes == []  # too few values


def test_the_lr_column_is_read_from_csv_logs_under_its_usual_names(tmp_path, cli):
    collapsing, healthy = _schedules()
    for column in ("lr", "learning_rate", "lr-SGD"):  # nndiag train / HF Trainer / Lightning's LearningRateMonitor
        path = tmp_path / f"{column}.csv"
        steps = np.arange(1, 301)
        pd.DataFrame({"step": steps, "train_loss": make("healthy", 300).dense.to_numpy(), column: collapsing["step-per-batch"]}).to_csv(
            path, index=False
        )
        result = cli("curves", str(path), "--json", "--no-plots")
        verdict = json.loads(result.stdout)
        assert "lr-schedule-collapses" in [f["code"] for f in verdict["findings"]], column
        assert f"lr <- {column}" in verdict["metrics"]["columns"]


def test_nndiag_train_finds_a_schedule_that_collapses_in_its_own_log(write_recipe):
    from conftest import SPIRAL_MLP, recipe_dict

    import nndiag

    collapsing = recipe_dict(SPIRAL_MLP, **{"train.epochs": 4, "schedule": {"name": "step", "step_size": 1, "gamma": 1e-4}})
    result = nndiag.train(write_recipe(collapsing))
    assert "lr-schedule-collapses" in result.verdict.codes, result.verdict.codes
    assert result.tables["train_steps"]["lr"].iloc[-1] < 1e-3 * result.tables["train_steps"]["lr"].max()
    steady = nndiag.train(write_recipe(recipe_dict(SPIRAL_MLP, **{"train.epochs": 4})))
    assert "lr-schedule-collapses" not in steady.verdict.codes


def test_nndiag_curves_takes_what_a_loop_produces_and_names_what_it_reads(tmp_path):
    import torch
    from conftest import REPO

    import nndiag

    loss = make("healthy", 200).dense.to_numpy()
    rows = [{"step": i + 1, "train_loss": float(v)} for i, v in enumerate(loss)]
    assert nndiag.curves(rows).status == "pass"  # a list of dicts
    assert nndiag.curves({"step": list(range(1, 201)), "loss": torch.tensor(loss)}).status == "pass"  # a dict of lists (tensors too)
    assert nndiag.curves(pd.DataFrame(rows)).status == "pass"
    pd.DataFrame(rows).to_csv(tmp_path / "log.csv", index=False)
    assert nndiag.curves(tmp_path / "log.csv").status == "pass" and nndiag.curves(str(tmp_path / "log.csv")).status == "pass"
    pytest.importorskip("tensorboard")
    assert nndiag.curves(REPO / "tests" / "data" / "curves" / "t-lr-low-sgd-digits").command == "curves"  # a TensorBoard folder
    for bad, words in (
        (42, "got an int"),
        ([1, 2, 3], "got a list of int"),
        ({"step": [1, 2], "loss": [1.0]}, "lists of different lengths"),
        ([{"step": 1, "loss": "low"}], "'loss' = a str"),
        ({}, "an empty dict"),
        (object(), "got an object"),
    ):
        with pytest.raises(nndiag.BadInput, match="a list of dicts .* a dict of lists .* a pandas DataFrame, a CSV file") as caught:
            nndiag.curves(bad)
        assert words in str(caught.value), (bad, str(caught.value))

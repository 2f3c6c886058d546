"""curves on REAL training logs (tests/data/curves/, written by benchmarks/curves_corpus.py): every planted cause is
found and no forbidden code is raised; unit tests of the rules that corpus calibrated (each with inputs that must
trigger it and healthy ones that must not); TensorBoard input; run names; the findings table's escaping."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from nndiag.diagnostics import curves
from nndiag.diagnostics.curves import Curves, decide
from nndiag.errors import BadInput
from nndiag.findings import CODES

CORPUS = Path(__file__).parent / "data" / "curves"
MANIFEST = pd.read_csv(CORPUS / "manifest.csv", keep_default_na=False)
CAUSES = ("healthy", "lr-too-high", "lr-too-low", "tiny-batch", "overfitting", "underfitting", "bad-init", "random-labels", "diverged")


# -- the corpus ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", MANIFEST.to_dict("records"), ids=lambda r: r["run"])
def test_corpus_run_gets_its_expected_codes_and_no_forbidden_one(run):
    if run["source"] == "lightning-tb":
        pytest.importorskip("tensorboard")
    verdict = curves.run([CORPUS / run["run"]]).verdict
    codes = verdict.codes
    assert set(codes) <= set(CODES["curves"])
    for code in run["expected"].split():
        assert code in codes, (run["run"], run["cause"], codes, [f.message for f in verdict.findings])
    for code in run["forbidden"].split():
        assert code not in codes, (run["run"], run["cause"], codes, [f.message for f in verdict.findings if f.code == code])


def test_corpus_covers_every_cause_from_every_logger_and_stays_small():
    assert len(MANIFEST) >= 40
    assert set(MANIFEST["cause"]) == set(CAUSES)
    for source in ("nndiag", "lightning-csv", "lightning-tb"):
        assert set(MANIFEST[MANIFEST["source"] == source]["cause"]) == set(CAUSES), source
    healthy = MANIFEST[MANIFEST["cause"] == "healthy"]["run"]
    assert len(healthy) >= 10 and any("epoch-log" in r for r in healthy) and any("every50" in r for r in healthy)
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 2_000_000, size
    for run in MANIFEST["run"]:  # every run's folder holds its log
        assert any((CORPUS / run).iterdir()), run


def test_whole_corpus_folder_reads_run_by_run():
    pytest.importorskip("tensorboard")
    runs = curves.load([CORPUS])
    assert sorted(c.label for c in runs) == sorted(MANIFEST["run"])


# -- noisy: the known miss (noise about a fifth of the drop) ---------------------------------------------


def _steps(y: np.ndarray, every: int = 1) -> Curves:
    """A step-indexed training loss, logged every `every` optimizer steps."""
    return Curves(x="step", dense=pd.Series(y, index=every * np.arange(1, len(y) + 1, dtype=float)))


@pytest.mark.parametrize("seed", range(4))
def test_noise_a_fifth_of_the_drop_is_noisy(seed):
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, 800)
    trend = 0.3 + 2.0 * np.exp(-u / 0.1)
    verdict = decide(_steps(np.abs(trend + 0.2 * 2.0 * rng.standard_normal(800))))
    assert "noisy" in verdict.codes
    finding = next(f for f in verdict.findings if f.code == "noisy")
    assert curves.NOISY_RATIO <= finding.evidence["ratio"] < 0.3


@pytest.mark.parametrize("seed", range(4))
def test_batch_of_two_losses_mostly_zero_with_jumps_are_noisy(seed):
    """A skewed minibatch loss (most batches ~0, some large): its MAD is ~0, its spread is not."""
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, 700)
    typical = 0.02 + 2.3 * np.exp(-u / 0.05)
    jumps = (rng.random(700) < 0.12) * rng.uniform(0.5, 3.0, 700)
    assert "noisy" in decide(_steps(typical * np.exp(0.2 * rng.standard_normal(700)) + jumps)).codes


@pytest.mark.parametrize("seed", range(4))
def test_mild_noise_and_a_single_spike_are_not_noisy(seed):
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, 600)
    y = (0.05 + 2.3 * np.exp(-u / 0.1)) * np.exp(0.15 * rng.standard_normal(600))
    y[400] = 2.5  # one bad batch
    assert decide(_steps(y)).codes == []


# -- overfitting: the known miss (a noisy floor near zero) -----------------------------------------------


def _epochs(train, val, train_acc=None, val_acc=None, dense=None, **chance) -> Curves:
    e = np.arange(1, len(val) + 1, dtype=float)
    fit = {"train_loss": pd.Series(np.asarray(train, float), index=e), "val_loss": pd.Series(np.asarray(val, float), index=e)}
    if train_acc is not None:
        fit["train_acc"] = pd.Series(np.asarray(train_acc, float), index=e)
    if val_acc is not None:
        fit["val_acc"] = pd.Series(np.asarray(val_acc, float), index=e)
    return Curves(x="step", dense=dense, fit=fit, fit_x="epoch", **chance)


@pytest.mark.parametrize("seed", range(6))
def test_overfitting_beside_a_noisy_training_floor_near_zero(seed):
    rng = np.random.default_rng(seed)
    e = np.arange(1, 41)
    train = 0.002 + 2.0 * np.exp(-e / 2.0)
    train[10:] = 0.002 * np.exp(0.5 * rng.standard_normal(30))  # a noisy floor near zero ...
    train[-1] = max(train[-1], 0.006)  # ... whose last point is above the one at the val minimum (the old rule compared these two)
    val = 0.3 + 2.0 * np.exp(-e / 2.0) + 0.02 * np.clip(e - 12, 0, None)
    verdict = decide(_epochs(train, val))
    assert "overfitting" in verdict.codes, verdict.codes
    assert "train loss" in next(f.message for f in verdict.findings if f.code == "overfitting")


def test_val_and_train_rising_together_is_not_overfitting():
    e = np.arange(1, 31)
    train = 0.3 + 2.0 * np.exp(-e / 2.0) + 0.03 * np.clip(e - 12, 0, None)
    val = train * 1.05
    assert "overfitting" not in decide(_epochs(train, val)).codes


# -- lr-too-low: slow from the start, still falling, far from zero ----------------------------------------


@pytest.mark.parametrize("n,every", [(60, 5), (345, 1), (2000, 1)])
def test_slow_exponential_without_a_fast_phase_is_lr_too_low(n, every):
    rng = np.random.default_rng(n)
    u = np.linspace(0, 1, n)
    y = (0.1 + 2.2 * np.exp(-u / 0.6)) * np.exp(0.03 * rng.standard_normal(n))
    codes = decide(_steps(y, every)).codes
    assert "lr-too-low" in codes and "still-improving" not in codes


def test_the_same_shape_over_a_few_dozen_steps_is_still_improving_not_lr_too_low():
    rng = np.random.default_rng(32)
    u = np.linspace(0, 1, 32)
    y = (0.1 + 2.2 * np.exp(-u / 0.6)) * np.exp(0.03 * rng.standard_normal(32))
    codes = decide(_steps(y)).codes  # 32 optimizer steps: too few to judge the LR (CS231n: ~100 iterations)
    assert "lr-too-low" not in codes and "still-improving" in codes


@pytest.mark.parametrize("n", [345, 2000])
def test_fast_fall_and_step_decay_schedule_are_not_lr_too_low(n):
    rng = np.random.default_rng(n)
    u = np.linspace(0, 1, n)
    fast = (0.2 + 2.1 * np.exp(-u / 0.05)) * np.exp(0.05 * rng.standard_normal(n))
    step_decay = (0.05 + 0.25 * (u < 1 / 3) + 0.08 * (u < 2 / 3) + 2.0 * np.exp(-u / 0.04)) * np.exp(0.05 * rng.standard_normal(n))
    assert "lr-too-low" not in decide(_steps(fast)).codes
    assert "lr-too-low" not in decide(_steps(step_decay)).codes


# -- lr-too-high from an unstable validation loss ----------------------------------------------------------


def test_validation_jumping_around_its_trend_is_lr_too_high():
    e = np.arange(1, 16)
    train = 0.05 + 2.0 * np.exp(-e / 1.5)
    val = (0.15 + 2.0 * np.exp(-e / 1.5)) * np.where(e % 2 == 0, 1.35, 0.8)
    verdict = decide(_epochs(train, val))
    assert "lr-too-high" in verdict.codes
    assert curves.val_swing(pd.Series(val)) >= curves.HIGH_VAL_SWING


def test_smooth_validation_is_not_lr_too_high():
    e = np.arange(1, 16)
    train = 0.05 + 2.0 * np.exp(-e / 1.5)
    val = (0.15 + 2.0 * np.exp(-e / 1.5)) * np.exp(0.02 * np.random.default_rng(0).standard_normal(15))
    assert decide(_epochs(train, val)).codes == []


# -- diverged: short runs, spikes, a blown-up validation ----------------------------------------------------


def test_a_run_that_ends_on_a_blow_up_is_diverged_even_with_two_points():
    assert decide(_steps(np.array([3.08, 39.5]))).codes == ["diverged"]
    y = np.r_[np.linspace(3.0, 1.2, 120), [9.5]]  # a trainer's 3x abort: the last logged step is the blow-up
    verdict = decide(_steps(y))
    assert verdict.codes == ["diverged"] and "ended at 9.5" in verdict.findings[0].message


def test_two_spikes_above_three_times_the_start_are_diverged_one_is_not():
    rng = np.random.default_rng(0)
    y = 2.0 + 0.3 * rng.standard_normal(200)
    y[:3] = 3.4
    one = y.copy()
    one[50] = 11.0
    two = one.copy()
    two[90] = 10.8
    assert "diverged" not in decide(_steps(one)).codes
    assert decide(_steps(two)).codes == ["diverged"]


def test_a_validation_spike_that_came_back_is_diverged_a_rise_to_the_end_is_not():
    e = np.arange(1, 11)
    train = np.r_[1.9, np.full(9, 2.3)]
    spike = _epochs(train, np.r_[132.0, np.full(9, 2.31)], dense=pd.Series(np.r_[1.91, 4.85, np.full(21, 2.3)], index=np.arange(1.0, 24)))
    assert decide(spike).codes == ["diverged"]
    rise = _epochs(0.01 + 2.0 * np.exp(-e), 1.0 + 0.8 * e)  # val ends 8x where it started: overfitting, not a blow-up
    assert "diverged" not in decide(rise).codes


# -- not-generalizing (random labels) ---------------------------------------------------------------------


def _random_labels(epochs=40):
    e = np.arange(1, epochs + 1, dtype=float)
    train = 0.05 + 2.3 * np.exp(-e / 8)
    val = 2.36 + 0.07 * e  # from ln 10 upwards: confident wrong answers
    train_acc = np.clip(1 - 0.9 * np.exp(-e / 8), 0, 1)
    val_acc = 0.1 + 0.01 * np.sin(e)
    return train, val, train_acc, val_acc


def test_random_labels_are_not_generalizing_and_fail():
    verdict = decide(_epochs(*_random_labels()))
    assert verdict.codes == ["not-generalizing"] and verdict.status == "fail"
    message = verdict.findings[0].message
    assert "generalises" in message and "val loss never" in message and "val accuracy never" in message


def test_random_labels_from_the_loss_alone():
    train, val, _, _ = _random_labels()
    assert "not-generalizing" in decide(_epochs(train, val)).codes


def test_not_generalizing_stays_quiet_on_healthy_underfitting_and_ordinary_overfitting():
    e = np.arange(1, 31, dtype=float)
    acc = np.clip(1 - 0.9 * np.exp(-e / 3), 0, 1)
    healthy = _epochs(0.05 + 0.3 * np.exp(-e / 3), 0.08 + 0.3 * np.exp(-e / 3), acc, acc - 0.02)
    fast_then_flat = _epochs(0.3 * np.exp(-e / 3) + 0.001, np.full(30, 0.1), np.full(30, 0.99), np.full(30, 0.97))  # learned in epoch 1
    underfit = _epochs(2.3 - 0.5 * (1 - np.exp(-e / 3)), 2.35 - 0.5 * (1 - np.exp(-e / 3)), 0.3 + 0 * e, 0.28 + 0 * e)
    overfit = _epochs(
        0.01 + 2.0 * np.exp(-e / 3), 1.0 + 1.3 * np.exp(-e / 3) + 0.03 * np.clip(e - 8, 0, None), acc, 0.1 + 0.6 * (1 - np.exp(-e / 3))
    )
    for case in (healthy, fast_then_flat, underfit, overfit):
        assert "not-generalizing" not in decide(case).codes
    assert "overfitting" in decide(overfit).codes


def test_val_accuracy_that_crept_up_is_not_called_not_generalizing():
    """200 MNIST-1D examples: val loss never fell, but val accuracy went 21% -> 29% (chance 10%): it learned a little."""
    train, val, train_acc, _ = _random_labels()
    val_acc = np.linspace(0.21, 0.29, 40)
    assert "not-generalizing" not in decide(_epochs(train, val, train_acc, val_acc)).codes


def test_chance_levels_from_train_catch_what_the_log_alone_cannot():
    """A model whose untrained loss is 10x ln C: validation at ln C looks like progress, unless chance is known."""
    train, _, train_acc, val_acc = _random_labels()
    dense = pd.Series(np.r_[23.0, 20.0, 15.0, np.linspace(5, 0.05, 197)], index=np.arange(1.0, 201))
    val = np.full(40, 2.33) + 0.01 * np.cos(np.arange(40))
    alone = _epochs(train, val, train_acc, val_acc, dense=dense)
    known = _epochs(train, val, train_acc, val_acc, dense=dense, chance_loss=math.log(10), chance_acc=0.1)
    assert "not-generalizing" not in decide(alone).codes
    assert "not-generalizing" in decide(known).codes


def _fine_tuning(seed: int = 0) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """A fine-tuning run of 5 epochs x 16 steps: trained weights, per-batch losses around 0.03 -> 0.015 with the minibatch
    noise of a nearly solved task (one hard batch at 4.6x the start), validation flat at 0.079 (dense, train, val)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(1.0, 81)
    dense = pd.Series((0.015 + 0.015 * np.exp(-steps / 30)) * np.exp(0.6 * rng.standard_normal(80)), index=steps)
    dense.iloc[12] = 0.136  # far below the chance level ln 10
    train = dense.to_numpy().reshape(5, 16).mean(axis=1)
    return dense, train, np.full(5, 0.079) - 0.0002 * np.arange(5)


def test_fine_tuning_noise_is_judged_against_the_chance_level_when_train_knows_it():
    """Its small drop from trained weights is no scale for its noise, nor its small start for a spike: against ln C
    (what the run knows from train) it is a healthy run; from scratch, the same noise on a whole drop from ln C is noisy."""
    dense, train, val = _fine_tuning()
    known = decide(_epochs(train, val, dense=dense, chance_loss=math.log(10), chance_acc=0.1))
    assert [f.code for f in known.findings if f.severity != "info"] == [], known.findings
    alone = decide(_epochs(train, val, dense=dense))
    assert {"noisy", "diverged", "lr-too-high", "plateau"} & set(alone.codes)  # the log alone: a small start, big noise
    rng = np.random.default_rng(1)
    steps = np.arange(1.0, 201)
    scratch = pd.Series(np.clip(0.1 + 2.2 * np.exp(-steps / 30) + 0.4 * rng.standard_normal(200), 0.01, None), index=steps)
    per_epoch = scratch.to_numpy().reshape(5, 40).mean(axis=1)
    assert "noisy" in decide(_epochs(per_epoch, per_epoch + 0.05, dense=scratch, chance_loss=math.log(10))).codes


def test_curves_on_a_train_folder_judge_it_with_the_chance_levels_train_recorded(cli, write_recipe, tmp_path):
    from conftest import SPIRAL_MLP

    out = tmp_path / "t"
    assert cli("train", write_recipe(SPIRAL_MLP), "--epochs", "2", "--out", out, "--no-plots").exit_code in (0, 1)
    (folder,) = [p.parent for p in out.rglob("train_epochs.csv")]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["chance_loss"] == pytest.approx(math.log(3)) and summary["metrics"]["chance_acc"] == pytest.approx(1 / 3)
    from nndiag.diagnostics import curve_logs

    (run,) = curve_logs.load([folder])
    assert run.chance_loss == pytest.approx(math.log(3)) and run.chance_acc == pytest.approx(1 / 3)


def test_train_passes_the_chance_levels(build):
    from conftest import SPIRAL_MLP

    from nndiag.diagnostics import train

    history, facts = train.measure(build(SPIRAL_MLP), epochs=1)
    assert facts["chance_loss"] == pytest.approx(math.log(3)) and facts["chance_acc"] == pytest.approx(1 / 3)


def test_train_on_random_labels_fails_not_generalizing(cli, write_recipe, tmp_path):
    (tmp_path / "shuffled.py").write_text(
        "import torch\n"
        "from nndiag.zoo.datasets import digits\n"
        "def make(n=200):\n"
        "    (x, y), _ = digits(flatten=True)\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    y = torch.randint(10, y.shape, generator=g)\n"
        "    return (x[:n], y[:n]), (x[n:n + 200], y[n:n + 200])\n"
    )
    recipe = write_recipe(
        {
            "name": "shuffled",
            "seed": 0,
            "device": "cpu",
            "data": {"target": "shuffled:make"},
            "model": {"name": "mlp", "args": {"hidden": [256, 256], "activation": "relu", "init": "kaiming"}},
            "loss": "cross_entropy",
            "optim": {"name": "adam", "lr": 3.0e-3},
            "train": {"batch_size": 50, "epochs": 20},
        }
    )
    result = cli("train", recipe, "--json", "--no-plots", "--no-progress", "--out", tmp_path / "out")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 1 and "not-generalizing" in [f["code"] for f in verdict["findings"]], verdict["findings"]
    assert "overfitting" not in [f["code"] for f in verdict["findings"]]


# -- TensorBoard input --------------------------------------------------------------------------------------


def write_events(
    folder: Path, train_tag="Loss/train", val_tag="Loss/val", acc_tag="Accuracy/val", epochs=20, steps=25, overfit=True, seed=0
):
    """Event files as torch.utils.tensorboard.SummaryWriter writes them: train loss every step, val per epoch."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    writer = SummaryWriter(log_dir=str(folder))
    for epoch in range(epochs):
        for s in range(steps):
            step = epoch * steps + s
            writer.add_scalar(train_tag, (0.05 + 2.2 * math.exp(-step / 60)) * math.exp(0.1 * rng.standard_normal()), step)
        val = 0.3 + 2.0 * math.exp(-step / 60) + (0.01 * max(0, epoch - 6) ** 2 if overfit else 0.0)
        writer.add_scalar(val_tag, val, step)
        writer.add_scalar(acc_tag, min(0.95, 0.3 + 0.1 * epoch), step)
    writer.close()
    return folder


def test_summary_writer_folder_is_read_and_says_which_tags(tmp_path, cli):
    folder = write_events(tmp_path / "runs" / "exp1")
    [run] = curves.load([folder])
    assert run.columns == {"x": "step", "train_loss": "Loss/train", "val_loss": "Loss/val", "val_acc": "Accuracy/val"}
    assert len(run.dense) == 500 and len(run.fit["val_loss"]) == 20 and run.label == "exp1"
    result = cli("curves", folder, "--json", "--no-plots")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0 and "overfitting" in [f["code"] for f in verdict["findings"]]
    assert "train loss <- Loss/train" in verdict["metrics"]["columns"] and "val loss <- Loss/val" in verdict["metrics"]["columns"]
    event_file = next(folder.glob("events.out.tfevents.*"))
    assert [f["code"] for f in json.loads(cli("curves", event_file, "--json", "--no-plots").stdout)["findings"]] == [
        f["code"] for f in verdict["findings"]
    ]


def test_hf_trainer_tags_and_a_folder_of_runs_diagnosed_run_by_run(tmp_path, cli):
    write_events(tmp_path / "runs" / "version_0", "train/loss", "eval/loss", "eval/accuracy", overfit=True)
    write_events(tmp_path / "runs" / "version_1", "train/loss", "eval/loss", "eval/accuracy", overfit=False, seed=1)
    result = cli("curves", tmp_path / "runs", "--json", "--no-plots")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    by_run = {f["evidence"]["run"]: f["code"] for f in verdict["findings"]}
    assert by_run == {"version_0": "overfitting"} and "version_1.points" in verdict["metrics"]


def test_lightning_tensorboard_logger_file_from_the_corpus(cli):
    pytest.importorskip("tensorboard")
    [run] = curves.load([CORPUS / "t-healthy-digits-mlp"])
    assert run.columns["train_loss"] == "train/loss" and run.columns["val_loss"] == "val/loss"
    assert run.columns["val_acc"] == "val/acc" and run.x == "step"
    [one_row_per_epoch] = curves.load([CORPUS / "t-random-labels-digits"])  # its epoch tag is unique per row: x is still the step
    assert one_row_per_epoch.x == "step"
    by_epoch = cli("curves", CORPUS / "t-healthy-digits-mlp", "--x", "epoch", "--json", "--no-plots")
    assert by_epoch.exit_code == 0, by_epoch.output
    missing = cli("curves", CORPUS / "t-healthy-digits-mlp", "--val", "valid/nll")
    assert missing.exit_code == 2 and "no tag 'valid/nll'" in missing.stderr and "val/loss" in missing.stderr


def test_without_tensorboard_installed_exit_2_names_the_extra(tmp_path, cli, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.1.host").write_bytes(b"\x00" * 16)
    for name in ["tensorboard", *[m for m in sys.modules if m.startswith("tensorboard.")]]:
        monkeypatch.setitem(sys.modules, name, None)  # import tensorboard(.anything) -> ImportError, as when not installed
    with pytest.raises(BadInput, match=r"pip install 'nndiag\[tensorboard\]'"):
        curves.load([tmp_path / "run"])
    result = cli("curves", tmp_path / "run")
    assert result.exit_code == 2 and "nndiag[tensorboard]" in result.stderr and "Traceback" not in result.output


def test_corrupt_event_file_and_empty_folder_exit_2(tmp_path, cli):
    pytest.importorskip("tensorboard")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "events.out.tfevents.1.host").write_bytes(b"not an event file at all")
    result = cli("curves", tmp_path / "bad")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    result = cli("curves", tmp_path / "empty")
    assert result.exit_code == 2 and "tfevents" in result.stderr and "metrics.csv" in result.stderr


# -- run names and the findings table -------------------------------------------------------------------------


def _metrics_csv(path: Path, rise: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    e = np.arange(1, 21)
    pd.DataFrame(
        {"epoch": e, "train_loss": 0.05 + 2 * np.exp(-e / 3), "val_loss": 0.2 + 2 * np.exp(-e / 3) + rise * np.clip(e - 8, 0, None)}
    ).to_csv(path, index=False)
    return path


def test_two_metrics_csv_are_two_runs_named_by_their_folders(tmp_path, cli):
    a, b = _metrics_csv(tmp_path / "a" / "metrics.csv", 0.05), _metrics_csv(tmp_path / "b" / "metrics.csv", 0.0)
    assert [c.label for c in curves.load([a, b])] == ["a", "b"]
    verdict = json.loads(cli("curves", a, b, "--json", "--no-plots").stdout)
    assert "a.points" in verdict["metrics"] and "b.points" in verdict["metrics"] and "metrics.points" not in verdict["metrics"]
    assert [f["message"][:4] for f in verdict["findings"]] == ["[a] "]
    same = curves.load([a, a])
    assert [c.label for c in same] == ["a", "a (2)"]
    deep = [_metrics_csv(tmp_path / "p" / "v0" / "metrics.csv", 0), _metrics_csv(tmp_path / "q" / "v0" / "metrics.csv", 0)]
    assert [c.label for c in curves.load(deep)] == ["p/v0", "q/v0"]


def test_findings_table_shows_the_run_prefix(tmp_path, cli):
    from nndiag.findings import Verdict
    from nndiag.output import terminal
    from nndiag.result import Result

    verdict = Verdict()
    verdict.add("overfitting", "warn", "[a] val loss rose 30% from [its] minimum", "see [bold]docs[/bold]")
    console = Console(record=True, width=200)
    terminal.render_findings(Result("curves", verdict), console)
    text = console.export_text()
    assert "[a] val loss rose" in text and "[its]" in text and "[bold]docs[/bold]" in text
    a, b = _metrics_csv(tmp_path / "a" / "metrics.csv", 0.05), _metrics_csv(tmp_path / "b" / "metrics.csv", 0.0)
    human = cli("curves", a, b, "--no-plots")
    assert "[a]" in human.stdout


def test_a_validation_of_the_untrained_model_before_the_first_train_point_is_where_val_starts_not_a_spike():
    """A loop that validates before training (an untrained model in eval mode can score far above chance) logs its
    first val point before the first train point: not a blow-up. The same high point after training is one."""
    steps = np.arange(1.0, 161)
    train = pd.Series(0.1 + 2.2 * np.exp(-steps / 20), index=steps)
    val = pd.Series(np.r_[152.0, 0.1 + 2.2 * np.exp(-np.arange(16.0, 161, 16) / 20)], index=np.r_[0.0, np.arange(16.0, 161, 16)])
    before = Curves(x="step", fit={"train_loss": train, "val_loss": val}, fit_x="step")
    assert "diverged" not in decide(before).codes, [f.message for f in decide(before).findings]
    after = Curves(x="step", fit={"train_loss": train, "val_loss": val.set_axis(np.r_[8.0, val.index[1:]])}, fit_x="step")
    assert decide(after).codes == ["diverged"]

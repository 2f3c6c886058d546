"""lr-find: the range test leaves no trace, the suggestion rule (invariance, noise, NaN, flat, narrow,
tiny), candidates mode, --apply, and the CLI."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.config import edit
from nndiag.diagnostics import defaults
from nndiag.diagnostics import lr_find as lf
from nndiag.diagnostics import lr_trials as lt
from nndiag.training import engine

LRS = np.array(lf.lr_schedule(1e-7, 10.0, 100))


def synthetic(noise: float = 0.0, seed: int = 0, blow_up: bool = True, drop: float = 2.0, base: float = 2.3) -> np.ndarray:
    """A range-test-shaped curve: flat, a sigmoid descent centred at 1e-3, then a blow-up near 1."""
    x = np.log10(LRS)
    curve = base - drop / (1 + np.exp(-(x + 3) * 2.5))
    if blow_up:
        curve = curve + np.where(x > -1, 3.0 * (x + 1) ** 2, 0.0)
    return curve + noise * np.random.default_rng(seed).standard_normal(len(x))


def frame_of(losses: np.ndarray, lrs: np.ndarray = LRS) -> pd.DataFrame:
    return pd.DataFrame({"step": range(1, len(losses) + 1), "lr": lrs[: len(losses)], "loss": losses, "smoothed_loss": losses})


FACTS = {"start": 1e-7, "end": 10.0, "planned_steps": 100, "stopped": "completed"}


# -- schedule --------------------------------------------------------------------------------


def test_schedule_exp_linear_and_single_point():
    exp = lf.lr_schedule(1e-7, 10.0, 100)
    assert exp[0] == pytest.approx(1e-7) and exp[-1] == pytest.approx(10.0) and len(exp) == 100
    assert np.allclose(np.diff(np.log(exp)), np.log(1e8) / 99)
    lin = lf.lr_schedule(0.1, 1.0, 10, "linear")
    assert lin[0] == pytest.approx(0.1) and lin[-1] == pytest.approx(1.0) and np.allclose(np.diff(lin), 0.1)
    assert lf.lr_schedule(1e-3, 1.0, 1) == [1e-3]


# -- the suggestion rule (pure) --------------------------------------------------------------


def test_healthy_curve_suggestion_inside_range_and_below_divergence():
    sug = lf.suggest(LRS, synthetic(noise=0.02))
    assert sug.problem is None
    assert sug.lr_min <= sug.suggested_lr <= sug.lr_max
    assert sug.lr_diverged is not None and sug.lr_max <= sug.lr_diverged
    assert 1e-3 < sug.suggested_lr < 1.0  # below the blow-up, above the middle of the descent


@pytest.mark.parametrize("scale,shift", [(2.0, 10.0), (0.5, -1.0), (1000.0, -37.0), (1e-3, 5.0)])
def test_suggestion_invariant_to_scaling_and_shifting_the_loss(scale, shift):
    losses = synthetic(noise=0.05, seed=3)
    a, b = lf.suggest(LRS, losses), lf.suggest(LRS, scale * losses + shift)
    for name in ("suggested_lr", "lr_min", "lr_max", "lr_diverged"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-12), name
    verdict_a, _ = lf.decide(frame_of(losses), FACTS)
    verdict_b, _ = lf.decide(frame_of(scale * losses + shift), FACTS)
    assert verdict_a.codes == verdict_b.codes


def test_suggestion_robust_to_noise():
    clean = lf.suggest(LRS, synthetic()).suggested_lr
    for seed in range(20):
        noisy = lf.suggest(LRS, synthetic(noise=0.1, seed=seed)).suggested_lr  # noise: 5% of the drop per point
        assert clean / 2 <= noisy <= clean * 2, (seed, noisy, clean)
    # a single huge spike in the descent does not move it either
    spiky = synthetic(noise=0.02)
    spiky[60] += 50.0
    assert clean / 2 <= lf.suggest(LRS, spiky).suggested_lr <= clean * 2


def _knee_lr(losses: np.ndarray, lrs: np.ndarray = LRS) -> float:
    """The first LR whose smoothed loss has covered KNEE_FRACTION of the drop (the rule's own smoothing)."""
    n = len(losses)
    s = lf.robust_smooth(losses, lf._window(n))
    i_min = int(np.argmin(s))
    start = float(np.median(losses[: max(3, int(lf.START_POINTS * n))]))
    return float(lrs[np.flatnonzero(s[: i_min + 1] <= start - lf.KNEE_FRACTION * (start - s[i_min]))[0]])


def test_suggestion_is_the_knee_when_the_cliff_is_far():
    """Descent ends near 1e-2, blow-up only past 1: the knee is > DIVERGENCE_MARGIN below the divergence."""
    losses = synthetic(noise=0.02)
    sug = lf.suggest(LRS, losses)
    assert sug.lr_diverged / _knee_lr(losses) > lf.DIVERGENCE_MARGIN
    assert sug.suggested_lr == pytest.approx(_knee_lr(losses))
    assert sug.suggested_lr > sug.lr_min  # the middle of the descent is lower still


def test_suggestion_keeps_the_margin_below_a_cliff_right_after_the_descent():
    """The descent ends just before the loss blows up (as with Adam on a CNN, or RMSprop on the spiral): the
    knee sits within DIVERGENCE_MARGIN of the divergence, so the suggestion is the divergence / the margin."""
    x = np.log10(LRS)
    losses = 2.3 - 2.0 / (1 + np.exp(-(x + 1.5) * 4)) + np.where(x > -0.8, 6.0 * (x + 0.8) ** 2, 0.0)
    losses = losses + 0.02 * np.random.default_rng(1).standard_normal(len(x))
    verdict, sug = lf.decide(frame_of(losses), FACTS)
    knee = _knee_lr(losses)
    assert sug.lr_diverged / knee < lf.DIVERGENCE_MARGIN  # the cliff is close
    assert sug.suggested_lr == pytest.approx(sug.lr_diverged / lf.DIVERGENCE_MARGIN) and sug.suggested_lr < knee
    assert sug.lr_min <= sug.suggested_lr <= sug.lr_max and verdict.status == "pass"


def test_without_a_divergence_the_suggestion_is_the_knee():
    x = np.log10(LRS)
    losses = 2.3 - 2.0 / (1 + np.exp(-(x + 2) * 2.5))  # descent ends near 0.1, flat to the end, no blow-up
    sug = lf.suggest(LRS, losses)
    assert sug.lr_diverged is None and sug.suggested_lr == pytest.approx(_knee_lr(losses))


def test_cli_and_api_use_the_module_default_batches_per_lr():
    import inspect

    from nndiag import api, cli

    assert inspect.signature(api.lr_find).parameters["batches_per_lr"].default == defaults.LR_FIND_BATCHES_PER_LR
    assert inspect.signature(cli.lr_find).parameters["batches_per_lr"].default == defaults.LR_FIND_BATCHES_PER_LR
    assert inspect.signature(lf.measure).parameters["batches_per_lr"].default == defaults.LR_FIND_BATCHES_PER_LR


def test_flat_curve_is_no_decrease():
    for losses in (np.full(100, 2.3), 2.3 + 0.05 * np.random.default_rng(0).standard_normal(100)):
        verdict, sug = lf.decide(frame_of(losses), FACTS)
        assert verdict.codes == ["no-decrease"] and verdict.status == "fail"
        assert sug.suggested_lr is None


def test_nan_after_the_minimum_truncates_and_never_suggests_above_it():
    losses = synthetic(noise=0.02, blow_up=False)
    losses[85:] = np.nan
    verdict, sug = lf.decide(frame_of(losses), {**FACTS, "stopped": "non-finite"})
    assert verdict.status != "fail"
    assert sug.lr_diverged == pytest.approx(LRS[85]) and sug.suggested_lr < LRS[85] and sug.lr_max <= LRS[85]


def test_nan_at_the_start_is_diverged_immediately():
    losses = synthetic()
    losses[0] = np.nan
    verdict, sug = lf.decide(frame_of(losses[:1]), {**FACTS, "stopped": "non-finite"})
    assert verdict.codes == ["diverged-immediately"] and sug.suggested_lr is None
    early = synthetic()[:4].copy()
    early[3] = np.inf
    verdict, _ = lf.decide(frame_of(early), {**FACTS, "stopped": "non-finite"})
    assert verdict.codes == ["diverged-immediately"]


def test_loss_rising_from_the_start_is_diverged_immediately():
    losses = 1.0 + np.linspace(0, 5, 100) ** 2
    verdict, _ = lf.decide(frame_of(losses), FACTS)
    assert verdict.codes == ["diverged-immediately"]


def test_still_falling_at_the_end_is_range_too_narrow():
    x = np.log10(LRS)
    losses = 2.3 - 2.0 / (1 + np.exp(-(x + 0.5) * 2.5))  # descent centred at 0.3: still falling at 10
    verdict, sug = lf.decide(frame_of(losses), FACTS)
    assert verdict.codes == ["range-too-narrow"] and verdict.status == "warn"
    assert sug.suggested_lr is not None and sug.lr_diverged is None
    healthy, _ = lf.decide(frame_of(synthetic(noise=0.02)), FACTS)
    assert healthy.codes == []


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_tiny_curves_give_a_finding_not_a_crash(n):
    verdict, sug = lf.decide(frame_of(synthetic()[:n]), {**FACTS, "planned_steps": n})
    assert verdict.codes == ["no-decrease"] and sug.suggested_lr is None
    assert "too few" in verdict.findings[0].message


# -- measuring: the range test leaves no trace -----------------------------------------------


def _state(exp, optimizer):
    return {
        "model": {k: v.clone() for k, v in exp.model.state_dict().items()},
        "modes": [m.training for m in exp.model.modules()],
        "optim": copy.deepcopy(optimizer.state_dict()),
        "rng": engine.rng_state(),
        "generator": exp.generator.get_state().clone(),
    }


def _same(a, b):
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["modes"] == b["modes"]
    assert a["optim"]["param_groups"] == b["optim"]["param_groups"]
    assert a["optim"]["state"].keys() == b["optim"]["state"].keys()
    for k, state in a["optim"]["state"].items():
        for name, value in state.items():
            other = b["optim"]["state"][k][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    assert a["rng"]["python"] == b["rng"]["python"]
    assert all(np.array_equal(x, y) for x, y in zip(a["rng"]["numpy"], b["rng"]["numpy"]))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["generator"], b["generator"])


def test_range_test_restores_everything_bit_for_bit(build):
    raw = recipe_dict(SPIRAL_MLP, **{"model.args.dropout": 0.1, "model.args.batchnorm": True, "model.args.hidden": [32, 32]})
    exp = build(raw)
    optimizer = exp.optimizer()
    for batch in list(exp.train_batches())[:3]:  # optimizer state that is not empty
        exp.step(optimizer, batch)
    exp.model.eval()
    exp.model[1].train()  # a mixed pattern of train/eval flags
    before = _state(exp, optimizer)
    frame, facts = lf.measure(exp, steps=40, end=100.0, optimizer=optimizer)
    assert len(frame) > 5
    _same(before, _state(exp, optimizer))


def test_seeded_training_is_identical_with_or_without_lr_find_first(build):
    from nndiag.training.trainer import Trainer

    def train(with_lr_find: bool):
        exp = build(SPIRAL_MLP)
        if with_lr_find:
            lf.run(exp, steps=30)
        history = Trainer(exp, epochs=2).fit()
        return history, {k: v.clone() for k, v in exp.model.state_dict().items()}

    (plain, w_plain), (after, w_after) = train(False), train(True)
    pd.testing.assert_frame_equal(plain.steps, after.steps)
    pd.testing.assert_frame_equal(plain.epochs.drop(columns="seconds"), after.epochs.drop(columns="seconds"))
    assert all(torch.equal(w_plain[k], w_after[k]) for k in w_plain)


def test_stops_on_divergence_and_records_the_lr_used(build):
    exp = build(recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd"}))
    frame, facts = lf.measure(exp, start=1e-4, end=1e4, steps=60)
    assert facts["stopped"] in ("diverged", "non-finite") and len(frame) < 60
    assert np.allclose(frame["lr"], lf.lr_schedule(1e-4, 1e4, 60)[: len(frame)], rtol=0, atol=0)
    assert list(frame.columns) == ["step", "lr", "loss", "smoothed_loss"]


def test_reading_losses_back_in_chunks_gives_the_same_record(build):
    exp = build(recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd"}))
    every, _ = lf.measure(exp, start=1e-4, end=1e4, steps=60, check_every=1)
    chunked, _ = lf.measure(exp, start=1e-4, end=1e4, steps=60, check_every=7)
    pd.testing.assert_frame_equal(every, chunked)


def test_several_batches_per_lr_and_linear_mode(build):
    exp = build(SPIRAL_MLP)
    frame, facts = lf.measure(exp, start=1e-3, end=0.1, steps=10, mode="linear", batches_per_lr=3)
    assert len(frame) == 10 and facts["batches_per_lr"] == 3
    assert np.allclose(np.diff(frame["lr"]), 0.011)


def test_amp_bf16_autocast_runs(build):
    exp = build(SPIRAL_MLP)
    exp.amp_dtype = torch.bfloat16  # CPU autocast: the same code path as bf16 on a GPU
    frame, _ = lf.measure(exp, start=1e-4, end=1e-1, steps=10)
    assert len(frame) == 10 and np.isfinite(frame["loss"]).all()


# -- candidates mode --------------------------------------------------------------------------


def test_candidate_outcomes_and_verdicts():
    assert lt.candidate_outcome(2.3, 1.0) == "drops"
    assert lt.candidate_outcome(2.3, 2.25) == "too-low"
    assert lt.candidate_outcome(2.3, math.nan) == "diverged" and lt.candidate_outcome(2.3, 9.0) == "diverged"

    def table(finals):
        rows = [
            {"lr": lr, "initial_loss": 2.3, "final_loss": f, "relative_drop": (2.3 - f) / 2.3, "outcome": lt.candidate_outcome(2.3, f)}
            for lr, f in finals.items()
        ]
        return pd.DataFrame(rows)

    verdict, best = lt.decide_candidates(table({1e-1: 50.0, 1e-2: 0.5, 1e-3: 1.2, 1e-4: 2.2}))
    assert best == 1e-2 and verdict.codes == []
    verdict, best = lt.decide_candidates(table({1e-1: math.nan, 1e-2: 40.0}))
    assert verdict.codes == ["diverged-immediately"] and best is None
    verdict, best = lt.decide_candidates(table({1e-3: 2.29, 1e-4: 2.3}))
    assert verdict.codes == ["no-decrease"] and best is None
    verdict, best = lt.decide_candidates(table({1e-1: 0.3, 1e-2: 1.0}))
    assert verdict.codes == ["range-too-narrow"] and best == 1e-1
    verdict, best = lt.decide_candidates(table({1e-1: math.nan, 1e-2: 1.5, 1e-3: 0.5}))  # the smallest wins, a larger one diverged
    assert verdict.codes == ["range-too-narrow"] and best == 1e-3


def test_candidates_from_the_same_initialisation(build):
    exp = build(SPIRAL_MLP)
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    summary, curves, facts = lt.measure_candidates(exp, [1e-1, 1e-5, 1e-5], steps=20)
    assert summary["initial_loss"].nunique() == 1
    assert summary["final_loss"].iloc[1] == summary["final_loss"].iloc[2]  # same init, same batches
    assert summary["outcome"].iloc[1] == "too-low" and summary["outcome"].iloc[0] == "drops"
    assert facts["weight_decay"] == lt.CANDIDATE_WEIGHT_DECAY
    assert all(torch.equal(before[k], v) for k, v in exp.model.state_dict().items())


# -- refine stage -------------------------------------------------------------------------------

TRIAL_LRS = [1e-3 * f for f in lt.REFINE_FACTORS]


def _trials(finals: list[float], initial: float = 2.3) -> pd.DataFrame:
    rows = [
        {
            "lr": lr,
            "initial_loss": initial,
            "final_loss": f,
            "relative_drop": (initial - f) / initial,
            "outcome": lt.candidate_outcome(initial, f),
        }
        for lr, f in zip(TRIAL_LRS, finals)
    ]
    return pd.DataFrame(rows)


def test_refine_picks_the_smallest_lr_that_trains_about_as_well_as_the_best():
    # best trial 0.5 (drop 1.8); 0.55 lies within REFINE_TOLERANCE (5%) of that drop, 0.7 does not
    assert lt.pick_refined(_trials([1.5, 0.55, 0.5, 0.9])) == TRIAL_LRS[1]
    assert lt.pick_refined(_trials([1.5, 0.7, 0.5, 0.9])) == TRIAL_LRS[2]
    assert lt.pick_refined(_trials([1.5, 0.9, 0.7, 0.5])) == TRIAL_LRS[3]  # the largest trial when it is clearly best
    assert lt.pick_refined(_trials([1.5, 0.9, math.nan, 0.5])) == TRIAL_LRS[3]  # a NaN trial is never picked
    assert lt.pick_refined(_trials([2.3, 2.4, 9.0, math.nan])) is None  # no trial lowered the loss


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1e-3, 0.0), (50.0, 0.0), (1.0, 7.0)])
def test_refine_pick_is_invariant_to_scaling_and_shifting_the_loss(scale, shift):
    finals, initial = np.array([1.5, 0.55, 0.5, 0.9]), 2.3
    trials = _trials(list(finals * scale + shift), initial * scale + shift).assign(outcome="drops")
    assert lt.pick_refined(trials) == TRIAL_LRS[1]


def test_refine_trials_stay_below_the_divergence_point_and_the_tested_range():
    assert lt.refine_lrs(1e-3, math.inf) == pytest.approx([10**-3.5, 1e-3, 10**-2.5, 1e-2])
    assert lt.refine_lrs(1e-3, 5e-3) == pytest.approx([10**-3.5, 1e-3, 10**-2.5])
    # on a real curve the pick keeps 20x below the blow-up, so every trial stays at least 2x below it
    for seed in range(5):
        sug = lf.suggest(LRS, synthetic(noise=0.02, seed=seed))
        assert max(lt.refine_lrs(sug.suggested_lr, sug.lr_diverged)) <= sug.lr_diverged / 2


def test_refine_stage_replaces_the_suggestion_and_leaves_no_trace(build):
    raw = recipe_dict(SPIRAL_MLP, **{"model.args.dropout": 0.1, "model.args.batchnorm": True, "model.args.hidden": [32, 32]})
    exp = build(raw)
    optimizer = exp.optimizer()
    for batch in list(exp.train_batches())[:3]:
        exp.step(optimizer, batch)
    exp.model.eval()
    exp.model[1].train()
    before = _state(exp, optimizer)
    result = lf.run(exp, steps=40, optimizer=optimizer, refine_steps=20)
    _same(before, _state(exp, optimizer))
    m, trials = result.metrics, result.tables["lr_refine"]
    assert m["refine_steps"] == 20 and m["refine_trials"] == len(trials)
    assert list(trials["factor"]) == pytest.approx(list(lt.REFINE_FACTORS[: len(trials)]))
    assert m["suggested_lr"] == m["refined_lr"] == trials.loc[trials["chosen"], "lr"].item()
    assert m["lr_min"] <= m["suggested_lr"] <= m["lr_max"]


def test_without_a_divergence_no_trial_goes_past_the_tested_range(build):
    result = lf.run(build(SPIRAL_MLP), start=1e-5, end=3e-3, steps=30, refine_steps=5)
    assert result.metrics["lr_diverged"] is None
    assert result.tables["lr_refine"]["lr"].max() <= result.tables["lr_find"]["lr"].max() * (1 + 1e-9)


def test_trials_keep_the_optimizers_param_groups_and_weight_decays(build):
    exp = build(SPIRAL_MLP)
    first, *rest = list(exp.model.parameters())
    exp.optimizer_factory = lambda params: torch.optim.AdamW(
        [{"params": [first], "lr": 1e-3, "weight_decay": 0.1}, {"params": rest, "lr": 1e-5, "weight_decay": 0.0}]
    )
    seen = []
    step = exp.step

    def spy(optimizer, batch, model=None):
        seen.append([(g["lr"], g["weight_decay"]) for g in optimizer.param_groups])
        return step(optimizer, batch, model=model)

    exp.step = spy
    lt.measure_candidates(exp, [1e-2], steps=1, own_settings=True)
    assert seen[0] == [(pytest.approx(1e-2), 0.1), (pytest.approx(1e-4), 0.0)]
    seen.clear()
    lt.measure_candidates(exp, [1e-2], steps=1)  # candidates mode: one LR, the largest weight decay
    assert seen[0] == [(1e-2, 0.1), (1e-2, 0.1)]


def test_trials_replay_a_user_loaders_own_order_and_hand_it_back(build):
    from torch.utils.data import DataLoader, TensorDataset

    from nndiag import api

    x, y = torch.randn(256, 2), torch.randint(0, 3, (256,))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(3))
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    exp = api.experiment(model, loader, loss="cross_entropy")
    state = loader.generator.get_state()
    summary, _, _ = lt.measure_candidates(exp, [1e-2, 1e-2], steps=12, own_settings=True)  # 12 steps: more than one pass
    assert summary["final_loss"].iloc[0] == summary["final_loss"].iloc[1]  # the same batches, in the same order
    assert torch.equal(loader.generator.get_state(), state)
    lf.run(exp, steps=20, refine_steps=3)
    assert torch.equal(loader.generator.get_state(), state)


def test_streamed_data_is_scored_on_a_streamed_subset(build):
    from torch.utils.data import TensorDataset

    from nndiag.training.splits import StreamSplit

    exp = build(SPIRAL_MLP)
    exp.data.train = StreamSplit(TensorDataset(exp.data.train.x, exp.data.train.y), exp.device, num_workers=0)
    subset = lt._eval_subset(exp)
    assert isinstance(subset, StreamSplit) and len(subset) == min(lt.EVAL_EXAMPLES, len(exp.data.train))
    result = lf.run(exp, steps=30, refine_steps=5)
    assert result.metrics["refine_trials"] >= 2


# -- the refine stage's outcome on the verdict (`settle`, pure, on a given table of trials) ---


def _refined_result(finals: list[float], curve_finding: bool = True, initial: float = 2.3) -> SimpleNamespace:
    """A range test's pick 1e-3 (range [3e-4, 5e-3]) settled by trials that end at `finals`: the verdict and
    metrics that decide assembles from `settle`."""
    sug = lf.Suggestion(1e-3, 3e-4, 5e-3, 5e-3, 2e-2, 1.0, 0.1, 100, range_test_lr=1e-3)
    doubt = lf.Doubt("the curve cannot place the LR", "advice", {"reason": "noisy"}) if curve_finding else None
    doubt = lf.settle(sug, _trials(finals, initial), 100, doubt)
    verdict = lf.Verdict()
    if doubt is not None:
        verdict.add("unreliable-suggestion", doubt.severity, doubt.message, doubt.advice, **doubt.evidence)
    metrics = {
        "suggested_lr": sug.suggested_lr,
        "lr_min": sug.lr_min,
        "lr_max": sug.lr_max,
        "range_test_lr": sug.range_test_lr,
        "refined_lr": sug.refined_lr,
    }
    return SimpleNamespace(verdict=verdict, metrics=metrics)


def test_a_trial_that_clearly_lowers_the_loss_settles_an_unreliable_curve():
    result = _refined_result([1.5, 0.9, 0.5, 0.7])
    (finding,) = result.verdict.findings
    assert finding.severity == "info" and result.verdict.status == "pass"
    assert result.metrics["suggested_lr"] == TRIAL_LRS[2] and result.metrics["range_test_lr"] == 1e-3
    assert result.metrics["lr_max"] == 5e-3 and result.metrics["lr_min"] == 3e-4
    widened = _refined_result([2.0, 1.9, 1.5, 0.5])  # the 10x trial wins: the range widens to hold it
    assert widened.metrics["lr_max"] == TRIAL_LRS[3] and widened.metrics["lr_min"] <= widened.metrics["suggested_lr"]


def test_a_barely_moving_trial_does_not_settle_it():
    result = _refined_result([2.25, 2.22, 2.2, 2.21])  # every trial "too-low" (under 10% drop)
    (finding,) = result.verdict.findings
    assert finding.severity == "warn" and result.metrics["suggested_lr"] == TRIAL_LRS[2]


def test_trials_that_all_diverge_lower_the_suggestion_with_a_warning():
    result = _refined_result([9.0, math.nan, 50.0, math.inf], curve_finding=False)
    (finding,) = result.verdict.findings
    assert finding.code == "unreliable-suggestion" and finding.severity == "warn" and finding.evidence["reason"] == "trials-diverged"
    assert result.metrics["refined_lr"] is None and result.metrics["suggested_lr"] == pytest.approx(TRIAL_LRS[0] / 10)
    assert result.metrics["lr_min"] <= result.metrics["suggested_lr"]
    partly = _refined_result([2.4, 9.0, 50.0, math.nan], curve_finding=False)  # 0.316x survives, no trial drops
    assert partly.metrics["suggested_lr"] == TRIAL_LRS[0] and partly.verdict.status == "warn"


def test_trials_that_never_lower_the_loss_keep_the_pick_with_a_warning():
    result = _refined_result([2.3, 2.4, 2.35, 2.5], curve_finding=False)
    (finding,) = result.verdict.findings
    assert finding.evidence["reason"] == "trials-flat" and result.metrics["suggested_lr"] == 1e-3
    quiet = _refined_result([1.5, 0.9, 0.5, 0.7], curve_finding=False)  # a healthy refine: no finding
    assert quiet.verdict.findings == [] and quiet.verdict.status == "pass"


def test_refine_steps_must_be_a_whole_number_at_least_zero():
    from nndiag.errors import BadInput

    for bad in (-1, True, 2.5):
        with pytest.raises(BadInput, match="--refine-steps"):
            lf.check_options(1e-7, 10.0, "exp", None, bad)
    lf.check_options(1e-7, 10.0, "exp", None, np.int64(5))


def test_refine_steps_zero_keeps_the_range_tests_suggestion(build):
    plain = lf.run(build(SPIRAL_MLP), steps=40, refine_steps=0)
    refined = lf.run(build(SPIRAL_MLP), steps=40, refine_steps=10)
    assert "lr_refine" not in plain.tables and "range_test_lr" not in plain.metrics
    assert refined.metrics["range_test_lr"] == plain.metrics["suggested_lr"]


def test_refine_lifts_a_suggestion_that_sits_below_the_best_lr(build):
    """Plain SGD on the spiral: the range test's knee (capped 20x below the blow-up) lies well below the LRs
    that train best in a few hundred steps; the trials find a larger one, and it trains better on batches
    the trials did not see in that order."""
    from nndiag.training.trainer import Trainer

    raw = recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd", "data.args.points_per_class": 200, "train.batch_size": 64})
    result = lf.run(build(raw), refine_steps=100)
    m = result.metrics
    assert m["suggested_lr"] >= 3 * m["range_test_lr"]

    def trained_loss(lr: float) -> float:
        exp = build(recipe_dict(raw, **{"optim.lr": lr, "seed": 5, "train.epochs": 20}))
        return float(Trainer(exp).fit().epochs["train_loss"].iloc[-1])

    assert trained_loss(m["suggested_lr"]) < 0.8 * trained_loss(m["range_test_lr"])


# -- --apply ----------------------------------------------------------------------------------

BLOCK = """# my recipe
name: r
data: {name: spiral}
model: {name: mlp}
optim:
  name: sgd   # plain SGD
  lr: 0.5     # too high?
  momentum: 0.9
"""


def test_apply_keeps_comments_in_block_and_flow_style():
    import yaml

    from nndiag.config.recipe import parse_recipe

    recipe = parse_recipe(yaml.safe_load(BLOCK))
    text = edit.apply_lr(recipe, 0.012345, BLOCK)
    assert "# too high?" in text and "lr: 0.0123" in text and "# plain SGD" in text
    flow = BLOCK.replace(
        "optim:\n  name: sgd   # plain SGD\n  lr: 0.5     # too high?\n  momentum: 0.9\n", "optim: {name: sgd, lr: 0.5}  # x\n"
    )
    text = edit.apply_lr(parse_recipe(yaml.safe_load(flow)), 3e-5, flow)
    assert "lr: 3.00e-05" in text and "# x" in text
    assert parse_recipe(yaml.safe_load(text)).optim.lr == 3e-5


def test_apply_falls_back_to_the_resolved_recipe_when_the_file_differs():
    import yaml

    from nndiag.config.recipe import parse_recipe

    recipe = parse_recipe(yaml.safe_load(BLOCK)).with_overrides({"optim.momentum": 0.5})  # e.g. --set
    text = edit.apply_lr(recipe, 0.01, BLOCK)
    loaded = parse_recipe(yaml.safe_load(text))
    assert loaded.optim.lr == 0.01 and loaded.optim.momentum == 0.5


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_range_test_json_csv_plot_and_apply(cli, write_recipe, tmp_path):
    out = tmp_path / "run"
    result = cli("lr-find", write_recipe(SPIRAL_MLP), "--json", "--apply", "--out", out)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    m = verdict["metrics"]
    assert verdict["command"] == "lr-find" and verdict["status"] in ("pass", "warn")
    assert m["lr_min"] <= m["suggested_lr"] <= m["lr_max"]
    frame = pd.read_csv(out / "lr_find.csv")
    assert list(frame.columns) == ["step", "lr", "loss", "smoothed_loss"]
    assert (out / "lr_find.png").is_file()
    trials = pd.read_csv(out / "lr_refine.csv")
    assert trials.loc[trials["chosen"], "lr"].item() == pytest.approx(m["suggested_lr"]) == pytest.approx(m["refined_lr"])
    assert m["range_test_lr"] == pytest.approx(trials.loc[trials["factor"].round(6) == 1.0, "lr"].item())
    applied = (out / "recipe.lr-applied.yaml").read_text()
    assert f"lr: {edit.yaml_number(edit.round_lr(m['suggested_lr']))}" in applied
    assert verdict["outputs"]["recipe.lr-applied.yaml"].endswith("recipe.lr-applied.yaml")


def test_cli_human_output_shows_curve_and_suggestion(cli, write_recipe):
    result = cli("lr-find", write_recipe(SPIRAL_MLP), "--steps", "40", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "suggested" in result.stdout and "smoothed loss vs LR" in result.stdout


def test_cli_three_steps_is_a_clear_finding(cli, write_recipe):
    result = cli("lr-find", write_recipe(SPIRAL_MLP), "--steps", "3", "--json", "--no-plots")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert [f["code"] for f in verdict["findings"]] == ["no-decrease"]
    assert verdict["metrics"]["suggested_lr"] is None


def test_cli_candidates_mode(cli, write_recipe, tmp_path):
    out = tmp_path / "cand"
    result = cli("lr-find", write_recipe(SPIRAL_MLP), "--candidates", "1e-1,1e-5", "--candidate-steps", "30", "--json", "--out", out)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    table = pd.read_csv(out / "lr_candidates.csv")
    assert list(table["lr"]) == [0.1, 1e-5] and list(table["outcome"]) == ["drops", "too-low"]
    assert verdict["metrics"]["suggested_lr"] == 0.1


@pytest.mark.parametrize(
    "args",
    [
        ["--candidates", "1e-1,abc"],
        ["--candidates", "-1"],
        ["--start", "0"],
        ["--start", "1", "--end", "0.1"],
        ["--mode", "cosine"],
        ["--refine-steps", "-1"],
    ],
)
def test_cli_bad_flags_exit_2(cli, write_recipe, args):
    result = cli("lr-find", write_recipe(SPIRAL_MLP), *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_a_test_that_blows_up_within_the_first_points_is_diverged_immediately():
    """The stop rule (smoothed loss > 4x best) fires after 4 points of 100: not 'too few points'."""
    frame = pd.DataFrame(
        {"step": [1, 2, 3, 4], "lr": [1.0, 1.05, 1.1, 1.15], "loss": [3.08, 6.45, 22.9, 91.7], "smoothed_loss": [3.08, 4.9, 11.0, 35.0]}
    )
    verdict, suggestion = lf.decide(frame, {"stopped": "diverged", "planned_steps": 100, "start": 1.0, "end": 100.0})
    assert verdict.codes == ["diverged-immediately"]
    assert suggestion.lr_diverged == 1.15


# -- unreliable-suggestion --------------------------------------------------------------------


def shelf_then_fall(alternate: float) -> np.ndarray:
    """A fall to a shelf that covers 90% of the drop (1e-5 ... 1e-3), a second, smaller fall (the last 10%)
    near 3e-3, then a blow-up; on the shelf the even points sit `alternate` lower and the odd points
    `alternate` higher, so one half-curve finds the knee on the shelf and the other only after the
    second fall."""
    x = np.log10(LRS)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    curve = 2.3 - 1.8 * sigmoid((x + 5) * 4) - 0.2 * sigmoid((x + 2.5) * 4) + np.where(x > -1, 3.0 * (x + 1) ** 2, 0.0)
    wobble = np.where(np.arange(len(x)) % 2 == 0, 1.0, -1.0) * alternate * ((x > -4.6) & (x < -2.9))
    return curve - wobble


def test_healthy_curves_are_reliable():
    for seed in range(10):
        verdict, sug = lf.decide(frame_of(synthetic(noise=0.02, seed=seed)), FACTS)
        assert "unreliable-suggestion" not in verdict.codes and sug.unreliable is None, seed
        assert sug.spread[0] <= sug.suggested_lr <= sug.spread[1] <= lf.UNSTABLE_FACTOR * sug.spread[0]


def test_noise_comparable_to_the_drop_is_unreliable():
    """Flagged, unless the suggestion is right anyway (within 2x of the clean curve's, and stable over the halves)."""
    fired = 0
    clean = lf.suggest(LRS, synthetic()).suggested_lr
    for seed in range(10):
        verdict, sug = lf.decide(frame_of(synthetic(noise=0.5, seed=seed)), FACTS)  # drop 2.0 = 4 noise deviations
        assert verdict.status != "fail"
        if "unreliable-suggestion" not in verdict.codes:
            assert clean / 2 <= sug.suggested_lr <= 2 * clean and sug.drop >= lf.RELIABLE_DROP * sug.noise, seed
        else:
            fired += 1
            finding = verdict.findings[verdict.codes.index("unreliable-suggestion")]
            assert finding.severity == "warn" and sug.suggested_lr is not None  # the guess is still given, flagged
            assert finding.evidence["reason"] in ("noisy", "unstable", "flat")  # flat: the drop fell under 3 deviations
    assert fired >= 8
    noisy = [lf.suggest(LRS, synthetic(noise=0.5, seed=seed)).unreliable == "noisy" for seed in range(10)]
    assert sum(noisy) >= 7  # the reason is "noisy": the drop is under 5 noise deviations


def test_a_suggestion_that_moves_between_half_curves_is_unstable():
    verdict, sug = lf.decide(frame_of(shelf_then_fall(0.03)), FACTS)
    assert "unreliable-suggestion" in verdict.codes and sug.unreliable == "unstable"
    assert sug.spread[1] > lf.UNSTABLE_FACTOR * sug.spread[0]
    # the same shape without the alternation: no finding
    verdict, sug = lf.decide(frame_of(shelf_then_fall(0.0)), FACTS)
    assert "unreliable-suggestion" not in verdict.codes


def test_reliability_is_invariant_to_scaling_and_shifting_the_loss():
    for losses in (synthetic(noise=0.5, seed=1), shelf_then_fall(0.05), synthetic(noise=0.02)):
        a, b = lf.suggest(LRS, losses), lf.suggest(LRS, 7.0 * losses - 3.0)
        assert a.unreliable == b.unreliable and a.spread == pytest.approx(b.spread, rel=1e-12)


def fine_tuning_curve(seed: int = 0) -> np.ndarray:
    """A trained model's range test: batch noise around a low loss, no descent, then a blow-up from 1e-2."""
    x = np.log10(LRS)
    rng = np.random.default_rng(seed)
    return 0.1 + 0.05 * np.abs(rng.standard_normal(len(x))) + np.where(x > -2, 2.0 * (x + 2) ** 2, 0.0)


def test_a_flat_curve_that_then_rises_is_a_cautious_flagged_suggestion_not_no_decrease():
    for seed in range(5):
        verdict, sug = lf.decide(frame_of(fine_tuning_curve(seed)), FACTS)
        assert verdict.codes == ["unreliable-suggestion"] and verdict.status == "warn", seed
        assert verdict.findings[0].evidence["reason"] == "flat"
        assert 1e-2 <= sug.lr_diverged <= 1e-1  # the rise, found within noise of where it starts
        assert sug.suggested_lr == pytest.approx(sug.lr_diverged / lf.DIVERGENCE_MARGIN)
        assert sug.lr_min <= sug.suggested_lr <= sug.lr_max == sug.lr_diverged


def test_flat_without_a_rise_or_rising_at_once_keeps_its_failing_findings():
    verdict, _ = lf.decide(frame_of(0.1 + 0.05 * np.abs(np.random.default_rng(0).standard_normal(100))), FACTS)
    assert verdict.codes == ["no-decrease"]
    x = np.log10(LRS)
    verdict, _ = lf.decide(frame_of(0.1 + np.where(x > -6.5, 2.0 * (x + 6.5) ** 2, 0.0)), FACTS)  # rises in the first 10%
    assert verdict.codes == ["diverged-immediately"]


def test_a_range_still_falling_at_its_end_is_settled_by_trials_below_the_top():
    import numpy as np

    lrs = np.geomspace(1e-7, 10, 100)
    frame = pd.DataFrame({"lr": lrs, "loss": 2.3 - 2.0 * np.linspace(0, 1, 100) ** 2 + 0.001 * np.sin(np.arange(100))})
    frame["smoothed_loss"] = frame["loss"]
    facts = {"stopped": "completed", "planned_steps": 100, "start": 1e-7, "end": 10.0, "refine_steps": 100}
    alone, _ = lf.decide(frame, facts)
    assert [(f.code, f.severity) for f in alone.findings if f.code == "range-too-narrow"] == [("range-too-narrow", "warn")]
    _, sug = lf.decide(frame, facts)
    factors = lt.REFINE_FACTORS
    rows = [
        {
            "lr": sug.suggested_lr * k,
            "initial_loss": 2.3,
            "final_loss": v,
            "relative_drop": (2.3 - v) / 2.3,
            "outcome": lt.candidate_outcome(2.3, v),
        }
        for k, v in zip(factors, [1.5, 0.5, 0.9, 1.2])
    ]
    settled, final = lf.decide(frame, facts, pd.DataFrame(rows))
    narrow = next(f for f in settled.findings if f.code == "range-too-narrow")
    assert narrow.severity == "info" and final.refined_lr == pytest.approx(sug.suggested_lr) and "settled" in narrow.message
    top = [{**r, "final_loss": v, "outcome": lt.candidate_outcome(2.3, v)} for r, v in zip(rows, [1.5, 1.2, 0.9, 0.5])]
    unsettled, _ = lf.decide(frame, facts, pd.DataFrame(top))  # the largest trial wins: the range may still be too narrow
    assert next(f for f in unsettled.findings if f.code == "range-too-narrow").severity == "warn"

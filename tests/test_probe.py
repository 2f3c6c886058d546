"""nndiag probe: rules on synthetic tables, healthy nets that must stay quiet, planted faults that must fire,
the init experiment, the trainer callback, and the CLI."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import DIGITS_MLP, SPIRAL_MLP, recipe_dict
from torch import nn

from nndiag.diagnostics import probe, probe_init

PROBLEM_CODES = set(probe_init.ACTIVATION_CODES) | {
    "vanishing-gradients",
    "exploding-gradients",
    "update-ratio-high",
    "update-ratio-low",
    "non-finite",
}
DEEP = [256] * 6  # small widths keep the suite fast; the lecture's behaviour depends on std·sqrt(width), not width


def mlp_recipe(activation: str = "relu", init: str = "kaiming", hidden: list[int] = DEEP, **changes):
    args = {"hidden": hidden, "activation": activation, "init": init}
    if "init_std" in changes:
        args["init_std"] = changes.pop("init_std")
    return recipe_dict(DIGITS_MLP, **{"model.args": args, **changes})


def probed(build, raw, batches=1, steps=2, tweak=None):
    exp = build(raw)
    if tweak:
        tweak(exp.model)
    return probe.run(exp, batches=batches, steps=steps)


# -- synthetic tables: every rule fires on its input and stays quiet on healthy numbers ---------------


def table(stds, kind="relu", **columns):
    n = len(stds)
    rows = []
    for i, s in enumerate(stds):
        rows.append(
            {
                "step": 0,
                "layer": f"l{i}",
                "module": "M",
                "kind": kind,
                "calls": 1,
                "numel": 100,
                "mean": 0.0,
                "std": s,
                "min": -1.0,
                "max": 1.0,
                "frac_saturated": math.nan,
                "frac_dead": 0.0 if kind == "relu" else math.nan,
                "units": 10,
                "nonfinite_act": 0,
                "weight_norm": math.nan,
                "grad_norm": math.nan,
                "update_ratio": math.nan,
                "nonfinite_grad": 0,
                "nonfinite_weight": 0,
            }
        )
    frame = pd.DataFrame(rows, columns=probe.LAYER_COLUMNS)
    for key, values in columns.items():
        frame[key] = values if isinstance(values, list) else [values] * n
    return frame


def linear_table(grads, ratios=None):
    frame = table([1.0] * len(grads), kind="linear")
    frame["grad_norm"] = grads
    frame["update_ratio"] = ratios if ratios is not None else [math.nan] * len(grads)
    frame["weight_norm"] = 1.0
    return frame


def test_healthy_table_has_no_findings():
    assert probe.decide(table([0.8, 0.82, 0.79, 0.81, 0.8])).findings == []


@pytest.mark.parametrize(
    "stds,code", [([0.5, 0.3, 0.18, 0.11, 0.07, 0.05], "vanishing-activations"), ([0.5, 2.0, 8.0, 30.0], "exploding-activations")]
)
def test_depth_rules(stds, code):
    assert probe.decide(table(stds)).codes == [code]


def test_one_jump_at_the_head_is_not_an_explosion_through_depth():
    # flat through the body, then one large layer: not a trend (2/3 of the steps must move the same way)
    assert probe.decide(table([0.08, 0.08, 0.075, 0.08, 0.6])).codes == []


def test_depth_compares_the_main_nonlinearity_with_itself():
    # a tiny BERT: two GELUs in the encoder, one tanh in the pooler on the side; the tanh is not part of the trail
    frame = table([0.08, 0.1, 0.64], kind="activation", module=["GELUActivation", "GELUActivation", "Tanh"])
    frame.loc[2, "kind"] = "bounded"
    frame["frac_saturated"] = [math.nan, math.nan, 0.0]
    assert list(probe.activation_trail(frame)["layer"]) == ["l0", "l1"] and probe.decide(frame).codes == []


def test_depth_rules_judge_an_initialisation_not_a_trained_network():
    exploding = [0.5, 2.0, 8.0, 30.0]
    assert probe.decide(table(exploding)).codes == ["exploding-activations"]  # step 0: the weights as given
    assert probe.decide(table(exploding).assign(step=150)).codes == []  # during training (ProbeCallback)


def test_update_ratio_low_is_not_blamed_on_the_lr_while_the_schedule_holds_it_low():
    low = linear_table([1.0] * 3, [1e-9, 1e-8, 1e-9]).assign(step=400)
    assert probe.decide(low.assign(lr=1e-6, lr_peak=3e-3)).codes == []  # the end of a cosine decay
    assert probe.decide(low.assign(lr=1e-3, lr_peak=3e-3)).codes == ["update-ratio-low"]  # a third of the peak: judged
    assert probe.decide(low).codes == ["update-ratio-low"]  # LR unknown (the probe command)


def test_slow_shrink_like_xavier_tanh_is_not_vanishing():
    # the lecture's "just right" Xavier tanh: 0.63 -> 0.29 over 6 layers (ratio 0.47)
    assert probe.decide(table([0.63, 0.49, 0.41, 0.36, 0.32, 0.29], kind="bounded", frac_saturated=0.0)).codes == []


def test_constant_layer_is_vanishing_even_when_shallow():
    assert probe.decide(table([1e-6, 1e-6])).codes == ["vanishing-activations"]


def test_saturation_threshold():
    assert probe.decide(table([0.85] * 3, kind="bounded", frac_saturated=[0.4, 0.33, 0.3])).codes == ["saturated-activations"]
    assert probe.decide(table([0.6] * 3, kind="bounded", frac_saturated=[0.01, 0.0, 0.2])).codes == []


def test_dead_relu_severity():
    warn = probe.decide(table([0.8] * 3, frac_dead=[0.0, 0.5, 0.1]))
    assert warn.codes == ["dead-relu"] and warn.status == "warn" and warn.findings[0].evidence["layers"] == ["l1"]
    assert probe.decide(table([0.8] * 3, frac_dead=[0.0, 1.0, 0.1])).status == "fail"
    assert probe.decide(table([0.8] * 3, frac_dead=[0.0, 0.3, 0.1])).codes == []


def test_gradient_rules_use_autotrainer_thresholds():
    assert probe.decide(linear_table([5e-5, 1.0, 1.0])).codes == ["vanishing-gradients"]
    assert probe.decide(linear_table([5e-3, 1.0, 10.0])).codes == []  # ratio < 1e-3 but ‖g_first‖ not < 1e-4
    assert probe.decide(linear_table([100.0, 1.0, 1.0])).codes == ["exploding-gradients"]
    assert probe.decide(linear_table([6.5, 1.0, 1.0])).codes == []  # resnet18 at init measures ~6.5
    assert probe.decide(linear_table([math.inf, 1.0, 1.0])).codes == ["exploding-gradients"]


def test_update_ratio_rules():
    assert probe.decide(linear_table([1.0] * 3, [0.5, 0.3, 0.2])).codes == ["update-ratio-high"]
    assert probe.decide(linear_table([1.0] * 3, [1e-9, 1e-8, 1e-9])).codes == ["update-ratio-low"]
    assert probe.decide(linear_table([1.0] * 3, [1e-3, 2e-2, 3e-4])).codes == []
    stalled = probe.decide(linear_table([1.0] * 3, [0.0] * 3))  # nonzero gradients, weights that did not move
    assert stalled.codes == ["update-ratio-low"] and stalled.findings[0].evidence["weights_stalled"] is True


def test_non_finite_rule_names_the_first_layer():
    frame = table([0.8] * 3, nonfinite_act=[0, 5, 5])
    verdict = probe.decide(frame)
    assert verdict.codes[0] == "non-finite" and verdict.findings[0].evidence["first_layer"] == "l1"


def test_a_non_finite_loss_alone_is_non_finite_at_init():
    verdict = probe.decide(table([0.8] * 3), {"batches": 1, "losses": [math.nan]})
    assert verdict.codes == ["non-finite"] and verdict.findings[0].evidence["at_init"] is True
    assert probe.decide(table([0.8] * 3), {"batches": 1, "losses": [2.3]}).codes == []


def test_several_steps_report_a_code_once_with_its_step():
    frame = pd.concat(
        [
            table([0.8] * 3).assign(step=10),
            table([0.8] * 3, frac_dead=[0.9, 0.9, 0.9]).assign(step=20),
            table([0.8] * 3, frac_dead=[0.9, 0.9, 0.9]).assign(step=30),
        ]
    )
    verdict = probe.decide(frame)
    assert verdict.codes == ["dead-relu"] and verdict.findings[0].evidence["step"] == 20


# -- the recorder: dead units per unit, call sites, non-finite ---------------------------------------


def test_dead_is_per_unit_not_per_element():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    recorder = probe.Recorder(model).attach()
    model(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # unit 0 alive for sample 0, unit 1 for sample 1, unit 2 never
    recorder.detach()
    rows, _ = recorder.rows(0)
    relu = next(r for r in rows if r["kind"] == "relu")
    assert relu["units"] == 3 and relu["frac_dead"] == pytest.approx(1 / 3)  # half the elements are zero, one unit is dead


@pytest.mark.parametrize("leaky", [nn.LeakyReLU(0.01), nn.PReLU(), nn.RReLU()])
def test_leaky_units_cannot_die(leaky):
    """A negative LeakyReLU/PReLU/RReLU unit still passes a gradient: never positive is not dead."""
    model = nn.Sequential(nn.Linear(2, 3), leaky)
    with torch.no_grad():
        model[0].bias.fill_(-10.0)  # every unit negative for every sample
    recorder = probe.Recorder(model).attach()
    model(torch.randn(8, 2))
    recorder.detach()
    rows, _ = recorder.rows(0)
    (act,) = [r for r in rows if r["kind"] != "linear"]
    assert act["kind"] == "activation" and not act["frac_dead"] >= 0  # no dead-unit count, so dead-relu cannot fire


def test_conv_units_are_channels_and_reused_modules_get_one_row_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(self.act(x)))

    model = Twice()
    recorder = probe.Recorder(model).attach()
    model(torch.randn(2, 1, 5, 5))
    model(torch.randn(2, 1, 5, 5))
    recorder.detach()
    rows, hist = recorder.rows(0)
    names = [r["layer"] for r in rows]
    assert names == ["act", "conv", "act#2"]
    assert rows[2]["units"] == 4 and rows[0]["units"] == 1 and rows[0]["calls"] == 2
    assert len(hist) == 3 * probe.HIST_BINS
    assert not model._forward_hooks and not model.act._forward_hooks  # detach removes every hook


# -- real models: healthy nets stay quiet ------------------------------------------------------------


@pytest.mark.parametrize("activation,init", [("relu", "kaiming"), ("tanh", "xavier")])
def test_healthy_mlps_have_no_findings(build, activation, init):
    result = probed(build, mlp_recipe(activation, init))
    assert result.verdict.findings == [], [f.message for f in result.verdict.findings]
    layers = result.tables["probe"]
    assert len(layers) == 14 and layers["grad_norm"].notna().sum() == 7 and layers["update_ratio"].notna().sum() == 7


CIFAR_LIKE = """
import torch
def make(n: int = 16, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return (x, y), (x[:4], y[:4])
"""


def test_resnet18_at_init_has_no_findings(build, tmp_path, write_recipe):
    (tmp_path / "cifar_like.py").write_text(CIFAR_LIKE)
    raw = recipe_dict(DIGITS_MLP, **{"data": {"target": "cifar_like:make"}, "model": {"name": "resnet18"}, "train.batch_size": 8})
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    exp = Experiment.build(load_recipe(write_recipe(raw)))
    result = probe.run(exp, batches=1, steps=1)
    assert result.verdict.findings == [], [f.message for f in result.verdict.findings]
    layers = result.tables["probe"]
    assert "layer1.0.relu#2" in set(layers["layer"])  # BasicBlock calls its ReLU twice
    assert layers[layers["kind"] == "relu"]["frac_dead"].max() < probe.DEAD_FRACTION


# -- planted faults fire --------------------------------------------------------------------------


def _bias(layer: int, value: float):
    def tweak(model):
        with torch.no_grad():
            model[layer].bias.fill_(value)

    return tweak


def _nan_weight(model):
    with torch.no_grad():
        model[3].weight[0, 0] = float("nan")


@pytest.mark.parametrize(
    "name,raw,tweak,code",
    [
        ("0.01 tanh", mlp_recipe("tanh", "normal", init_std=0.01), None, "vanishing-activations"),
        ("0.05 tanh (gain 3.2 at width 256)", mlp_recipe("tanh", "normal", init_std=0.2), None, "saturated-activations"),
        ("xavier relu, deep", mlp_recipe("relu", "xavier", hidden=[256] * 10), None, "vanishing-activations"),
        ("huge init", mlp_recipe("relu", "normal", init_std=1.0), None, "exploding-activations"),
        ("large negative bias", mlp_recipe(), _bias(3, -10.0), "dead-relu"),
        ("deep sigmoid", mlp_recipe("sigmoid", "xavier", hidden=[256] * 8), None, "vanishing-gradients"),
        ("tanh std 1.0", mlp_recipe("tanh", "normal", init_std=1.0), None, "exploding-gradients"),
        ("LR way too high", mlp_recipe(**{"optim.lr": 5.0}), None, "update-ratio-high"),
        ("LR 1e-9", mlp_recipe(**{"optim.lr": 1e-9}), None, "update-ratio-low"),
        ("NaN weight", mlp_recipe(), _nan_weight, "non-finite"),
    ],
)
def test_planted_faults_fire(build, name, raw, tweak, code):
    result = probed(build, raw, tweak=tweak)
    assert code in result.verdict.codes, (name, [f.message for f in result.verdict.findings])
    finding = next(f for f in result.verdict.findings if f.code == code)
    assert any(ch.isdigit() for ch in finding.message)  # the message quotes numbers


def test_probe_hands_everything_back_and_is_reproducible(build):
    exp = build(mlp_recipe(**{"optim.lr": 0.5}))
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    rng = torch.get_rng_state()
    first = probe.run(exp, batches=2, steps=3)
    assert all(torch.equal(before[k], v) for k, v in exp.model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    second = probe.run(exp, batches=2, steps=3)
    pd.testing.assert_frame_equal(first.tables["probe"], second.tables["probe"])


# -- the init experiment ----------------------------------------------------------------------------


def test_init_experiment_gives_each_case_the_lectures_verdict():
    result = probe_init.run(width=256, depth=6)
    cases = result.tables["probe_cases"]
    assert list(cases["case"]) == ["0.01 tanh", "0.05 tanh", "xavier tanh", "xavier relu", "kaiming relu"]
    assert list(cases["verdict"]) == ["collapse to zero", "saturated", "well scaled", "collapse to zero", "well scaled"]
    assert cases["matches_lecture"].all() and result.metrics["matches_lecture"] is True
    assert cases.loc[0, "init_std"] == pytest.approx(0.01 * 4)  # rescaled from width 4096: same gain std·sqrt(width)
    assert result.status == "fail" and set(result.verdict.codes) == {"vanishing-activations", "saturated-activations"}


def test_init_experiment_one_case_passes():
    result = probe_init.run(width=128, depth=4, inits=["kaiming"], activations=["relu"])
    assert result.status == "pass" and list(result.tables["probe_cases"]["case"]) == ["kaiming relu"]


# -- the trainer callback ---------------------------------------------------------------------------


def test_probe_callback_probes_every_n_steps_and_removes_its_hooks(build):
    from nndiag.training.trainer import Trainer

    exp = build(mlp_recipe(**{"train.batch_size": 128}))
    callback = probe.ProbeCallback(every=3)
    history = Trainer(exp, epochs=1, max_steps=12, callbacks=[callback]).fit()  # 12 steps = one epoch: a validation pass runs
    rows = callback.rows
    assert len(history.steps) == 12 and sorted(rows["step"].unique()) == [3, 6, 9, 12]
    assert (rows["calls"] == 1).all()  # validation forwards are not recorded
    assert rows["update_ratio"].notna().sum() == 4 * 7 and rows["grad_norm"].notna().sum() == 4 * 7
    assert callback.verdict().findings == []
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in exp.model.modules())
    assert set(callback.histograms["step"]) == {3, 6, 9, 12}


def test_probe_callback_sees_a_too_high_lr(build):
    from nndiag.training.trainer import Trainer

    exp = build(mlp_recipe(**{"optim.lr": 5.0}))
    callback = probe.ProbeCallback(every=1)
    Trainer(exp, max_steps=3, abort_factor=None, callbacks=[callback]).fit()
    callback.close()
    assert "update-ratio-high" in callback.verdict().codes


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_probe_json_and_files(cli, write_recipe, tmp_path):
    out = tmp_path / "run"
    result = cli("probe", write_recipe(mlp_recipe()), "--batches", "1", "--steps", "1", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["command"] == "probe" and verdict["status"] == "pass"
    assert (out / "probe.csv").is_file() and (out / "probe.png").is_file() and (out / "probe_params.csv").is_file()
    assert list(pd.read_csv(out / "probe.csv").columns) == probe.LAYER_COLUMNS


def test_cli_probe_table_highlights_a_fault(cli, write_recipe):
    result = cli("probe", write_recipe(mlp_recipe("tanh", "normal", init_std=0.01)), "--steps", "0", "--no-plots")
    assert result.exit_code == 1 and "vanishing" in result.output and "probe:" in result.output


def test_cli_init_experiment(cli, tmp_path):
    out = tmp_path / "exp"
    result = cli("probe", "--init-experiment", "--width", "128", "--out", out, "--json")
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["metrics"]["matches_lecture"] is True
    assert (out / "probe.png").is_file() and (out / "probe_cases.csv").is_file()


def test_cli_bad_input(cli, write_recipe):
    assert cli("probe").exit_code == 2
    assert cli("probe", "--init-experiment", "--activation", "swish").exit_code == 2
    assert cli("probe", "--init-experiment", "--init", "big").exit_code == 2
    assert cli("probe", write_recipe(mlp_recipe()), "--init", "xavier").exit_code == 2


def test_probe_callback_leaves_no_hooks_behind_when_training_ends(build):
    """Training that ends between arming and the probe step must not leave hooks on the model."""
    from nndiag.diagnostics.probe import ProbeCallback
    from nndiag.training.trainer import Trainer

    exp = build(recipe_dict(SPIRAL_MLP))
    Trainer(exp, max_steps=5, callbacks=[ProbeCallback(every=6)]).fit()  # armed after step 5, never collected
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in exp.model.modules())


# -- issue 19: mid-training honesty (whether optimizer steps ran before the probe) ------------------------------


def test_trained_weights_are_never_said_to_be_an_initialisation():
    dead = table([0.8] * 3, frac_dead=[0.0, 1.0, 0.1])
    fresh, unknown, trained = (probe.decide(dead, {"trained": t}).findings[0] for t in (False, None, True))
    assert "no optimizer step has run yet" in fresh.advice and fresh.evidence["trained"] is False
    assert "If no optimizer step has run on these weights" in unknown.advice and "trained=True" in unknown.advice
    assert "no optimizer step" not in trained.advice and "too-high learning rate" in trained.advice and trained.evidence["trained"]
    nan = table([0.8] * 3, nonfinite_act=[0, 5, 5])
    at_init = probe.decide(nan, {"trained": False}).findings[0]
    assert at_init.evidence["at_init"] is True and "No optimizer step has run yet" in at_init.advice
    after = probe.decide(nan, {"trained": True}).findings[0]
    assert after.evidence["at_init"] is False and "blew up before this probe" in after.advice and "optim.lr" in after.advice
    vanishing = table([1.0, 0.5, 0.2, 0.08, 0.03, 0.01])
    assert probe.decide(vanishing, {"trained": False}).codes == ["vanishing-activations"]
    assert probe.decide(vanishing, {"trained": True}).codes == []  # what a trained net's activations do is what it learned


def test_the_api_knows_a_model_was_trained_when_its_optimizer_has_state():
    import nndiag

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit dead
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    unknown = nndiag.probe(model, (x, y), loss="cross_entropy", optimizer=optimizer)
    assert "If no optimizer step has run on these weights" in next(f.advice for f in unknown.findings if f.code == "dead-relu")
    model(x).sum().backward()
    optimizer.step()  # Adam now holds state for every parameter
    known = nndiag.probe(model, (x, y), loss="cross_entropy", optimizer=optimizer)
    dead = next(f for f in known.findings if f.code == "dead-relu")
    assert dead.evidence["trained"] is True and "no optimizer step" not in dead.advice
    assert "your optimizer's lr=" in dead.advice and "optim.lr" not in dead.advice  # your own objects: Python's words

"""root_cause: the ranking on hand-made findings, planted faults each with its expected root cause, and
advice that the evidence rules out (no LR advice on zero gradients, no absurd LR factors)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SPIRAL_MLP, recipe_dict

from nndiag.diagnosis import root_cause
from nndiag.diagnosis.root_cause import RULES, explained_by, probe_could_explain, rank
from nndiag.diagnostics import check_loss, overfit_small, probe
from nndiag.findings import ALL_CODES, CODES, lr_move
from nndiag.formatting import jsonable

TESTS = Path(__file__).parent


def f(code, severity="fail", step="x", **evidence):
    return {"code": code, "severity": severity, "step": step, "message": f"{code} seen", "advice": "a", "evidence": evidence}


def causes(findings):
    return [c.cause for c in rank(findings)]


def codes_explained(findings, cause):
    return sorted(findings[i]["code"] for i in cause.explained)


# -- the ranking on hand-made findings -------------------------------------------------------------


def test_dead_units_explain_a_loss_that_does_not_move_and_the_lr_is_not_blamed():
    findings = [
        f("loss-not-decreasing", step="overfit-small", zero_gradients=True),
        f("vanishing-activations", step="probe"),
        f("dead-relu", step="probe"),
        f("update-ratio-low", "warn", step="probe", zero_gradients=True),
    ]
    ranked = rank(findings)
    assert [c.cause for c in ranked] == ["dead-units"]
    assert codes_explained(findings, ranked[0]) == ["loss-not-decreasing", "update-ratio-low", "vanishing-activations"]
    assert [findings[i]["code"] for i in ranked[0].evidence] == ["dead-relu"]
    assert explained_by(findings, ranked) == ["dead-units", "dead-units", None, "dead-units"]


def test_partly_dead_units_at_warn_do_not_establish_a_cause():
    findings = [f("loss-not-decreasing"), f("dead-relu", "warn")]
    assert causes(findings) == ["lr-too-low"]


@pytest.mark.parametrize(
    "findings,expected",
    [
        ([f("vanishing-activations"), f("loss-not-decreasing"), f("update-ratio-high", "warn")], ["vanishing-activations"]),
        ([f("saturated-activations"), f("exploding-gradients"), f("initial-loss-high"), f("loss-diverged")], ["saturated-activations"]),
        ([f("vanishing-gradients"), f("plateau", "warn"), f("underfitting", "warn")], ["vanishing-gradients"]),
        ([f("exploding-activations"), f("initial-loss-high"), f("diverged-immediately")], ["init-too-large"]),
        ([f("initial-loss-high"), f("loss-diverged"), f("diverged-immediately"), f("all-trials-diverged")], ["output-too-large"]),
        ([f("non-finite-loss"), f("loss-diverged"), f("dead-relu"), f("no-decrease")], ["non-finite-values"]),
        ([f("non-finite", at_init=True), f("vanishing-activations")], ["non-finite-values"]),
        ([f("cannot-overfit", outputs_are_probabilities=True), f("plateau", "warn")], ["softmax-before-loss"]),
        ([f("cannot-overfit", outputs_are_probabilities=False), f("underfitting", "warn")], ["too-little-capacity"]),
        ([f("initial-loss-low")], ["not-a-fresh-model"]),
        ([f("loss-not-decreasing", zero_gradients=True)], ["zero-gradients"]),
        ([f("loss-diverged"), f("non-finite", at_init=False), f("update-ratio-high", "warn")], ["lr-too-high"]),
        ([f("loss-not-decreasing"), f("update-ratio-low", "warn")], ["lr-too-low"]),
        ([f("inputs-not-normalized", "warn"), f("initial-loss-high"), f("loss-diverged")], ["inputs-not-normalized"]),
        ([f("loss-diverged", at_init=True)], ["non-finite-values"]),
        ([f("update-ratio-low", "warn", zero_gradients=True)], ["zero-gradients"]),
    ],
    ids=lambda v: "+".join(x["code"] for x in v) if isinstance(v, list) and v and isinstance(v[0], dict) else None,
)
def test_each_rule_names_its_cause_and_absorbs_what_it_explains(findings, expected):
    ranked = rank(findings)
    assert [c.cause for c in ranked] == expected
    assert sum(len(c.evidence) + len(c.explained) for c in ranked) == len(findings)  # one cause accounts for all


def test_update_ratio_findings_that_are_consequences_or_stalls_name_no_lr_cause():
    assert rank([f("update-ratio-high", "warn", consequence=["dead-relu"])]) == []  # follows from a structural finding
    assert rank([f("update-ratio-low", "warn", weights_stalled=True)]) == []  # unmoved weights with nonzero gradients: not the LR
    assert [c.cause for c in rank([f("update-ratio-high", "warn")])] == ["lr-too-high"]


def test_a_huge_initial_loss_explains_divergence_only_through_the_cause_above_it():
    """Saturation explains the huge initial loss, and so (transitively) the divergence it explains."""
    findings = [
        f("initial-loss-high", step="check-loss"),
        f("loss-diverged", step="overfit-small"),
        f("saturated-activations", step="probe"),
    ]
    (cause,) = rank(findings)
    assert cause.cause == "saturated-activations" and codes_explained(findings, cause) == ["initial-loss-high", "loss-diverged"]


def test_the_lr_is_a_root_cause_only_for_what_no_structural_cause_explains():
    findings = [f("initial-loss-high"), f("loss-diverged"), f("lr-too-high", "warn", step="curves")]
    ranked = rank(findings)
    assert [c.cause for c in ranked] == ["output-too-large", "lr-too-high"]
    assert [findings[i]["code"] for i in ranked[1].evidence] == ["lr-too-high"]


def test_failing_causes_come_before_warnings_whatever_their_precedence():
    findings = [f("inputs-not-normalized", "warn"), f("cannot-overfit", outputs_are_probabilities=True)]
    assert causes(findings) == ["softmax-before-loss", "inputs-not-normalized"]


def test_healthy_runs_and_unrelated_warnings_name_no_root_cause():
    assert rank([]) == []
    assert rank([f("still-improving", "info"), f("best-on-boundary", "warn"), f("noisy", "warn"), f("overfitting", "warn")]) == []
    assert rank([f("dead-relu", "info")]) == []  # info never counts


def test_probe_is_wanted_for_warnings_only_a_probe_cause_could_explain():
    assert probe_could_explain([f("plateau", "warn")]) and probe_could_explain([f("underfitting", "warn")])
    assert not probe_could_explain([f("best-on-boundary", "warn"), f("still-improving", "info"), f("overfitting", "warn")])
    assert not probe_could_explain([f("plateau", "info")])


def test_the_table_uses_known_codes_unique_ids_and_is_documented():
    ids = [r.cause for r in RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert all(s.code in ALL_CODES for s in rule.established_by)
        assert all(c in ALL_CODES for c in rule.explains if c != "*")
        assert rule.fix and rule.title
    section = (REPO / "docs" / "commands" / "babysit.md").read_text()
    for rule in RULES:
        assert f"`{rule.cause}`" in section, rule.cause
    assert {r.cause for r in root_cause.PROBE_CAUSES} == {
        "dead-units",
        "vanishing-activations",
        "saturated-activations",
        "vanishing-gradients",
        "init-too-large",
        "units-died-in-training",  # issue 19: the probe during training (or trained=True) establishes it
    }
    assert all(s.code in CODES["probe"] for r in root_cause.PROBE_CAUSES for s in r.established_by)


# -- planted faults: every step babysit runs before the probe, then the ranking ------------------------


def _experiment(tmp_path, write_recipe, raw):
    for name in ("faults.py", "root_faults.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    return Experiment.build(load_recipe(write_recipe(raw)))


def _findings(exp):
    out = []
    for step, result in (
        ("check-loss", check_loss.run(exp)),
        ("overfit-small", overfit_small.run(exp, steps=300)),
        ("probe", probe.run(exp)),
    ):
        out += [{**jsonable(x.to_dict()), "step": step} for x in result.verdict.findings]
    return out


KAIMING = {"name": "mlp", "args": {"hidden": [64, 64], "activation": "relu", "init": "kaiming"}}
PLANTED = {
    "all ReLUs dead at init": ({"model": {"target": "root_faults:dead_relu"}}, "dead-units"),
    "tiny init, deep ReLU": (
        {"model": {"name": "mlp", "args": {"hidden": [64] * 6, "activation": "relu", "init": "normal", "init_std": 0.01}}},
        "vanishing-activations",
    ),
    "tiny init, deep tanh, SGD": (
        {
            "model": {"name": "mlp", "args": {"hidden": [64] * 6, "activation": "tanh", "init": "normal", "init_std": 0.01}},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        },
        "vanishing-activations",
    ),
    "huge init, tanh": (
        {"model": {"name": "mlp", "args": {"hidden": [64] * 3, "activation": "tanh", "init": "normal", "init_std": 1.0}}},
        "saturated-activations",
    ),
    "last layer x100": (
        {"model": {"target": "root_faults:scaled_head", "args": {"scale": 100.0}}, "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
        "output-too-large",
    ),
    "LR far too high": ({"model": KAIMING, "optim": {"name": "sgd", "lr": 100.0}}, "lr-too-high"),
    "LR far too low": ({"model": KAIMING, "optim": {"name": "sgd", "lr": 1e-8}}, "lr-too-low"),
    "softmax before cross-entropy": ({"model": {"target": "faults:SoftmaxOutput"}}, "softmax-before-loss"),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_fault_has_its_root_cause_first(tmp_path, write_recipe, name):
    changes, expected = PLANTED[name]
    findings = _findings(_experiment(tmp_path, write_recipe, recipe_dict(SPIRAL_MLP, **changes)))
    ranked = rank(findings)
    assert ranked and ranked[0].cause == expected, (name, [(x["step"], x["code"]) for x in findings], [c.cause for c in ranked])
    failing = [i for i, x in enumerate(findings) if x["severity"] == "fail"]
    assert all(i in ranked[0].evidence + ranked[0].explained for i in failing)  # the first cause explains every failure
    _assert_sane_advice(findings)


def test_last_layer_x100_diverges_and_the_huge_initial_loss_explains_it(tmp_path, write_recipe):
    changes, _ = PLANTED["last layer x100"]
    findings = _findings(_experiment(tmp_path, write_recipe, recipe_dict(SPIRAL_MLP, **changes)))
    (first, *_) = rank(findings)
    assert ("overfit-small", "loss-diverged") in [(findings[i]["step"], findings[i]["code"]) for i in first.explained]


def test_healthy_recipe_has_no_root_cause(tmp_path, write_recipe):
    findings = _findings(_experiment(tmp_path, write_recipe, recipe_dict(SPIRAL_MLP, model=KAIMING)))
    assert findings == [] and rank(findings) == []


# -- advice the evidence rules out ------------------------------------------------------------------


FACTOR = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)x", re.IGNORECASE)


def _assert_sane_advice(findings):
    for x in findings:
        factors = [float(m) for m in FACTOR.findall(x["advice"])]
        assert all(v <= 1000 for v in factors), (x["code"], x["advice"])


def _overfit_frame(losses):
    rows = [{"step": i, "loss": v, "evaluated": True, "subset_loss": v, "subset_acc": 0.3, "lr": 0.01} for i, v in enumerate(losses)]
    return pd.DataFrame(rows)


def test_overfit_small_gives_no_lr_advice_when_every_gradient_was_zero():
    frame, facts = _overfit_frame([1.1, 1.1, 1.1]), {"initial_loss": 1.1, "zero_grad_weights": 2, "weights": 2}
    (finding,) = overfit_small.decide(frame, facts).findings
    assert finding.code == "loss-not-decreasing" and finding.evidence["zero_gradients"]
    assert "too low" not in finding.advice and "do not raise optim.lr" in finding.advice and "exactly zero" in finding.message
    (lr,) = overfit_small.decide(frame, {**facts, "zero_grad_weights": 0}).findings
    assert "too low" in lr.advice and not lr.evidence["zero_gradients"]
    (partial,) = overfit_small.decide(frame, {**facts, "zero_grad_weights": 1}).findings
    assert "too low" in partial.advice and "1 of 2 weight tensors" in partial.advice


def test_overfit_small_measures_zero_first_gradients_of_dead_units(tmp_path, write_recipe):
    exp = _experiment(tmp_path, write_recipe, recipe_dict(SPIRAL_MLP, model={"target": "root_faults:dead_relu"}))
    _, facts = overfit_small.measure(exp, steps=5)
    assert facts["weights"] == 2 and facts["zero_grad_weights"] == 2
    healthy = _experiment(tmp_path, write_recipe, recipe_dict(SPIRAL_MLP, model=KAIMING))
    _, facts = overfit_small.measure(healthy, steps=5)
    assert facts["weights"] == 3 and facts["zero_grad_weights"] == 0


def _linear_table(grads, ratios, step=0):
    rows = [
        {
            "step": step,
            "layer": f"l{i}",
            "module": "Linear",
            "kind": "linear",
            "calls": 1,
            "numel": 100,
            "mean": 0.0,
            "std": 1.0,
            "min": -1.0,
            "max": 1.0,
            "frac_saturated": math.nan,
            "frac_dead": math.nan,
            "units": 0,
            "nonfinite_act": 0,
            "weight_norm": 1.0,
            "grad_norm": g,
            "update_ratio": r,
            "nonfinite_grad": 0,
            "nonfinite_weight": 0,
        }
        for i, (g, r) in enumerate(zip(grads, ratios))
    ]
    return pd.DataFrame(rows, columns=probe.LAYER_COLUMNS)


def test_probe_zero_update_with_zero_gradients_says_so_without_an_lr_factor():
    (finding,) = probe.decide(_linear_table([0.0, 0.0], [0.0, 0.0])).findings
    assert finding.code == "update-ratio-low" and finding.evidence["zero_gradients"]
    assert "did not move at all" in finding.message and "do not raise optim.lr" in finding.advice
    assert "e+" not in finding.advice and not FACTOR.search(finding.advice)


def test_probe_lr_factors_stay_between_3_and_1000():
    (low,) = probe.decide(_linear_table([1.0] * 3, [2.5e-10] * 3)).findings
    assert "raise optim.lr by 1000x or more" in low.advice  # was "about 4e+06x higher"
    (high,) = probe.decide(_linear_table([1.0] * 3, [600.0] * 3)).findings
    assert "lower optim.lr by 1000x or more" in high.advice  # was "about 6e+05x lower"
    (mid,) = probe.decide(_linear_table([1.0] * 3, [0.2] * 3)).findings
    assert "lower optim.lr by about 200x" in mid.advice
    assert lr_move("lower", 1.2) == "lower optim.lr by about 3x" and lr_move("lower", math.inf) == "lower optim.lr by 1000x or more"
    for x in (low, high, mid):
        _assert_sane_advice([{"code": x.code, "advice": x.advice}])


def test_probe_update_ratio_beside_a_structural_finding_is_a_consequence():
    table = _linear_table([1.0] * 3, [0.3] * 3)
    table.loc[:, "std"] = [1.0, 1e-6, 1e-6]  # constant layers: vanishing-activations
    verdict = probe.decide(table)
    assert verdict.codes == ["vanishing-activations", "update-ratio-high"]
    advice = verdict.findings[1].advice
    assert "consequence of vanishing-activations" in advice and "lower optim.lr" not in advice
    assert verdict.findings[1].evidence["consequence"] == ["vanishing-activations"]


def test_probe_steps_that_diverged_are_not_called_an_lr_too_low():
    """SGD at LR 100: the first steps kill the network, so the last step's update ratio is 0."""
    facts = {"batches": 2, "steps": 5, "losses": [1.2, 1.25, 1.2, 3e3, 5e6, 4e9, 4e9]}
    (finding,) = probe.decide(_linear_table([0.2, 0.9, 1.0], [0.0, 0.0, 0.015]), facts).findings
    assert finding.code == "update-ratio-high" and "diverged" in finding.message
    assert "lower optim.lr" in finding.advice and finding.evidence["probed_peak_loss"] == 4e9
    assert "lr-find` measures how far" in finding.advice and "lr_factor" not in finding.evidence  # nothing measured a factor
    quiet = {**facts, "losses": [1.2, 1.25, 1.2, 1.1, 1.0, 0.9, 0.8]}
    assert probe.decide(_linear_table([0.2, 0.9, 1.0], [1e-3, 2e-3, 3e-3]), quiet).codes == []


def test_probe_findings_at_init_do_not_blame_the_learning_rate():
    table = _linear_table([1.0, 1.0], [1e-3, 1e-3])
    table.loc[0, "nonfinite_act"] = 3
    (nonfinite,) = probe.decide(table, {"batches": 1, "losses": [math.nan]}).findings
    assert nonfinite.evidence["at_init"] and "learning rate is not the cause" in nonfinite.advice
    later = _linear_table([1.0, 1.0], [1e-3, 1e-3])
    later.loc[0, "nonfinite_weight"] = 3
    (blew_up,) = probe.decide(later, {"batches": 1, "losses": [1.0, 1.0, math.inf]}).findings
    assert not blew_up.evidence["at_init"] and "lower optim.lr" in blew_up.advice
    relu = _linear_table([1.0], [1e-3]).assign(kind="relu", frac_dead=1.0, units=10)
    (dead,) = probe.decide(relu).findings
    assert dead.code == "dead-relu" and "did not kill them" in dead.advice
    (during,) = probe.decide(relu.assign(step=20)).findings
    assert "too-high learning rate" in during.advice


# -- the direct causes of issue 18 rank above the learning rate ---------------------------------------

LR_SYMPTOMS = [f("plateau", "warn", step="curves"), f("lr-too-low", "warn", step="curves"), f("underfitting", "warn", step="curves")]
DIRECT = {
    "non-finite-data": [
        f("non-finite-data", step="check-data"),
        f("non-finite-loss", step="check-loss"),
        f("loss-diverged", step="overfit-small"),
    ],
    "labels-out-of-range": [f("labels-out-of-range", step="check-data")],
    "labels-look-random": [f("labels-look-random", "warn", step="check-data"), f("not-generalizing", step="curves")],
    "few-distinct-examples": [f("few-distinct-examples", "warn", step="check-data"), f("overfitting", "warn", step="curves")],
    "constant-inputs": [f("constant-features", "warn", step="check-data"), f("labels-look-random", "warn", step="check-data")],
    "unshuffled-batches": [f("unshuffled-batches", "warn", step="check-data"), f("noisy", "warn", step="curves")],
    "loss-broadcasts": [f("loss-broadcasts", step="check-loss"), f("cannot-overfit", step="overfit-small")],
    "nothing-trains": [f("no-gradient", step="check-loss"), f("loss-not-decreasing", step="overfit-small")],
    "softmax-before-loss": [f("outputs-bounded", step="check-loss"), f("cannot-overfit", step="overfit-small")],
    "symmetric-units": [f("symmetric-units", step="check-loss"), f("cannot-overfit", step="overfit-small")],
    "eval-randomness": [f("eval-not-deterministic", step="check-loss"), f("lr-too-high", "warn", step="curves")],
    "batch-dependence": [f("batch-dependence", step="check-loss"), f("overfitting", "warn", step="curves")],
    "eval-statistics": [f("eval-train-mismatch", "warn", step="overfit-small"), f("lr-too-high", "warn", step="curves")],
    "loss-sums": [
        f("loss-scales-with-batch", "warn", step="check-loss"),
        f("initial-loss-high", step="check-loss"),
        f("diverged", step="curves"),
    ],
    "regularization-dominates": [f("regularization-dominates", "warn", step="check-loss")],
    "clipping-too-tight": [f("clipping-always-active", "warn", step="train")],
    "majority-class": [f("accuracy-at-baseline", "warn", step="train", imbalanced=True), f("class-imbalance", "info", step="check-data")],
}


@pytest.mark.parametrize("cause", list(DIRECT))
def test_a_measured_cause_explains_what_the_loss_shows_and_the_lr_is_not_blamed(cause):
    rule = next(r for r in RULES if r.cause == cause)
    findings = DIRECT[cause] + [s for s in LR_SYMPTOMS if rule.explains_code(s["code"])]  # the symptoms this cause accounts for
    ranked = causes(findings)
    assert ranked == [cause], ranked  # first, and no learning-rate cause beside it


def test_at_baseline_on_balanced_data_is_no_majority_class_cause():
    assert "majority-class" not in causes([f("accuracy-at-baseline", "warn", step="train", imbalanced=False)])


def test_frozen_parameters_only_reported_establish_nothing():
    assert causes([f("frozen-parameters", "info", step="check-loss"), *LR_SYMPTOMS]) == ["lr-too-low"]


# -- issue 19: the causes a training loop shows directly rank above the LR; trained weights are not an init ------


@pytest.mark.parametrize(
    "code, cause, symptoms",
    [
        ("no-optimizer-step", "loop-no-optimizer-step", ["plateau", "underfitting"]),
        ("no-gradient-at-step", "loop-no-gradient", ["weights-unchanged", "plateau", "update-ratio-low"]),
        ("weights-unchanged", "loop-weights-unchanged", ["plateau", "lr-too-low"]),
        ("grads-accumulate", "loop-grads-accumulate", ["diverged", "update-ratio-high", "noisy"]),
        ("eval-mode-training", "loop-eval-mode", ["overfitting", "diverged"]),
        ("same-batch-repeated", "loop-same-batch", ["overfitting", "not-generalizing"]),
        ("lr-schedule-collapses", "schedule-collapses", ["plateau", "lr-too-low", "underfitting", "noisy"]),
    ],
)
def test_a_loop_cause_explains_its_symptoms_and_no_lr_cause_is_named(code, cause, symptoms):
    findings = [f(code, "warn" if code in ("eval-mode-training", "same-batch-repeated", "lr-schedule-collapses") else "fail")]
    findings += [f(s, "warn") for s in symptoms]
    ranked = rank(findings)
    assert [c.cause for c in ranked] == [cause], [c.cause for c in ranked]
    assert codes_explained(findings, ranked[0]) == sorted(symptoms)


def test_units_dead_after_training_are_not_an_initialisation_cause():
    at_init = [f("dead-relu", step="probe"), f("plateau", "warn", step="curves")]
    assert causes(at_init) == ["dead-units"]
    trained = [f("dead-relu", step="probe", trained=True), f("plateau", "warn", step="curves")]
    ranked = rank(trained)
    assert [c.cause for c in ranked] == ["units-died-in-training"] and "lower optim.lr" in ranked[0].fix
    assert "lower your optimizer's lr=" in rank(trained, audience="python")[0].fix  # a Python user reads Python's words


def test_one_report_quotes_one_lr_factor_the_one_its_evidence_measured():
    """An LR cause's fix quotes the factor a finding measured (the probe's update ratio), and no other advice in the
    package guesses a number of its own: one report never says "10x" beside "1000x or more"."""
    (high,) = probe.decide(_linear_table([1.0] * 3, [0.2] * 3)).findings  # update ratio 0.2: about 200x too large
    diverged = {
        "code": "loss-diverged",
        "severity": "fail",
        "evidence": {},
        "advice": overfit_small.decide(_overfit_frame([2.3, 9.0, 40.0]), {"initial_loss": 2.3, "zero_grad_weights": 0, "weights": 2})
        .findings[0]
        .advice,
    }
    findings = [diverged, {"code": high.code, "severity": high.severity, "evidence": high.evidence, "advice": high.advice}]
    (cause,) = rank(findings)
    assert cause.cause == "lr-too-high" and cause.fix.startswith("Lower optim.lr by about 200x")
    quoted = {m for f in findings for m in FACTOR.findall(f["advice"])} | set(FACTOR.findall(cause.fix))
    assert quoted == {"200"}, quoted
    (alone,) = rank([diverged])  # nothing measured the factor: lr-find is named as what measures it
    assert "lr-find` measures how far" in alone.fix and not FACTOR.search(alone.fix)
    python = rank(findings, audience="python")[0]
    assert python.fix.startswith("Lower your optimizer's lr= by about 200x")


def test_no_advice_in_the_package_guesses_an_lr_factor():
    """Every LR factor a user can read comes from a measurement (nndiag.findings.lr_move with a factor): the registry's
    advice, the root causes' fixes and the rules' advice texts quote none."""
    import ast
    import inspect

    from nndiag import codes as registry
    from nndiag.diagnostics import curves, lr_find, train

    guess = re.compile(r"\b(?:lower|raise)\w*\s+(?:the learning rate|optim\.lr)\b[^.;]{0,40}?\b\d+(?:-\d+)?x\b", re.IGNORECASE)
    texts = [c.advice for c in registry.REGISTRY.values()] + [r.fix_text() for r in RULES]
    for module in (curves, lr_find, train, overfit_small, probe, check_loss):  # the string literals the rules build advice from
        texts += [
            n.value for n in ast.walk(ast.parse(inspect.getsource(module))) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
    offending = [m.group(0) for t in texts for m in guess.finditer(t)]
    assert offending == [], offending

"""The weight-init lecture's experiment, built in: `nndiag probe --init-experiment`.

A stack of `depth` bias-free Linear layers of `width` units, each followed by the activation, fed
`samples` rows of Gaussian input (the lecture: 16 x 4096, 6 layers), plus a 10-way head so that a
cross-entropy loss on random labels gives gradients. Every case is probed with the same hooks and
judged by the same `probe.decide` as a real model. The lecture's five cases and its verdicts:

  0.01 tanh     W = 0.01·randn        activations collapse to zero      -> vanishing-activations
  0.05 tanh     W = 0.05·randn        all activations saturate          -> saturated-activations
  xavier tanh   W = randn/sqrt(D_in)  well scaled at every layer        -> no activation finding
  xavier relu   W = randn/sqrt(D_in)  activations collapse again        -> vanishing-activations
  kaiming relu  W = randn·sqrt(2/D_in) well scaled at every layer       -> no activation finding

A numeric init is a std *at the lecture's width 4096*; at another width it is rescaled to keep the
per-layer gain std·sqrt(width) the same (0.01 -> 0.64, 0.05 -> 3.2), so `--width 512` reproduces the
same five behaviours; the std actually used is in the table (`init_std`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import nn

from nndiag.diagnostics import probe
from nndiag.diagnostics.defaults import INIT_DEPTH, INIT_SAMPLES, INIT_WIDTH
from nndiag.errors import BadInput
from nndiag.findings import Verdict
from nndiag.result import Result
from nndiag.training.progress import Progress, Ticker
from nndiag.zoo.models import ACTIVATIONS

REFERENCE_WIDTH = 4096  # the lecture's hidden size; numeric inits are stds at this width
HEAD_CLASSES = 10  # outputs of the head that gives the loss its gradients

COLLAPSE, SATURATE, WELL = "collapse to zero", "saturated", "well scaled"
LECTURE_CASES: list[tuple[str, str, str]] = [  # (init, activation, the lecture's verdict)
    ("0.01", "tanh", COLLAPSE),
    ("0.05", "tanh", SATURATE),
    ("xavier", "tanh", WELL),
    ("xavier", "relu", COLLAPSE),
    ("kaiming", "relu", WELL),
]
ACTIVATION_CODES = ("vanishing-activations", "saturated-activations", "exploding-activations", "dead-relu")

CASE_COLUMNS = [
    "case",
    "init",
    "activation",
    "init_std",
    "first_std",
    "last_std",
    "max_frac_saturated",
    "max_frac_dead",
    "g_first",
    "g_last",
    "verdict",
    "lecture_verdict",
    "matches_lecture",
    "codes",
]


def init_std(init: str, width: int) -> float:
    """The weight std of a case: xavier 1/sqrt(D_in), kaiming sqrt(2/D_in), a number rescaled from width 4096."""
    if init == "xavier":
        return 1 / math.sqrt(width)
    if init == "kaiming":
        return math.sqrt(2 / width)
    try:
        value = float(init)
    except ValueError:
        raise BadInput(f"expected xavier, kaiming or a weight std such as 0.01, got {init!r}", where="--init") from None
    if not value > 0:
        raise BadInput(f"a weight std must be > 0, got {init!r}", where="--init")
    return value * math.sqrt(REFERENCE_WIDTH / width)


def lecture_verdict(init: str, activation: str) -> str | None:
    for i, a, verdict in LECTURE_CASES:
        if (i, a) == (init, activation) or (i == init and a == activation):
            return verdict
    return None


def build_net(width: int, depth: int, activation: str, std: float, generator: torch.Generator) -> nn.Sequential:
    """[Linear(width, width, bias=False) -> activation] x depth -> Linear(width, 10), weights N(0, std²)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [_linear(width, width, std, generator), ACTIVATIONS[activation]()]
    layers.append(_linear(width, HEAD_CLASSES, std, generator))
    return nn.Sequential(*layers)


def _linear(fan_in: int, fan_out: int, std: float, generator: torch.Generator) -> nn.Linear:
    """A bias-free Linear with N(0, std²) weights, skipping PyTorch's default init (slow at 4096²)."""
    linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=False)
    with torch.no_grad():
        linear.weight.normal_(0.0, std, generator=generator)
    return linear


def measure_case(
    init: str, activation: str, width: int, depth: int, samples: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Probe one case: one forward and backward on Gaussian input; (layer rows, histogram rows, std used)."""
    std = init_std(init, width)
    generator = torch.Generator().manual_seed(seed)
    net = build_net(width, depth, activation, std, generator)
    x = torch.randn(samples, width, generator=generator)
    y = torch.randint(0, HEAD_CLASSES, (samples,), generator=generator)
    recorder = probe.Recorder(net).attach()
    try:
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
    finally:
        recorder.detach()
    rows, hist = recorder.rows(0)
    probe.add_weight_columns(rows, recorder, probe.grad_norms_now(net))
    return rows, hist, std


def run(
    width: int = INIT_WIDTH,
    depth: int = INIT_DEPTH,
    inits: list[str] | None = None,
    activations: list[str] | None = None,
    samples: int = INIT_SAMPLES,
    seed: int = 0,
    progress: Progress | None = None,
) -> Result:
    """The lecture's five cases (or every combination of the given inits and activations); `progress` hears each case."""
    if width < 2 or depth < 1 or samples < 1:
        raise BadInput(f"need width >= 2, depth >= 1 and samples >= 1 (got {width}, {depth}, {samples})", where="--width/--depth")
    for a in activations or []:
        if a not in ACTIVATIONS:
            raise BadInput(f"unknown activation {a!r}; expected one of {', '.join(ACTIVATIONS)}", where="--activation")
    if inits or activations:
        cases = [
            (i, a, lecture_verdict(i, a))
            for i in (inits or ["0.01", "0.05", "xavier", "kaiming"])
            for a in (activations or ["tanh", "relu"])
        ]
    else:
        cases = list(LECTURE_CASES)
    all_rows, all_hist, case_rows = [], [], []
    verdict = Verdict()
    ticker = Ticker(progress, "probe --init-experiment", len(cases), "cases")
    for k, (init, activation, expected) in enumerate(cases):
        name = f"{init} {activation}"
        rows, hist, std = measure_case(init, activation, width, depth, samples, seed)
        ticker(k + 1, note=name)
        layers = pd.DataFrame(rows, columns=probe.LAYER_COLUMNS)
        case_verdict = probe.decide(layers)
        for finding in case_verdict.findings:
            finding.message = f"{name}: {finding.message}"
            finding.evidence["case"] = name
            verdict.findings.append(finding)
        case_rows.append(_case_row(name, init, activation, std, layers, case_verdict, expected))
        for row in rows:
            row.update(case=name, init=init, activation=activation, init_std=std)
        for row in hist:
            row["case"] = name
        all_rows += rows
        all_hist += hist
    ticker.finish()
    layer_columns = ["case", "init", "activation", "init_std"] + probe.LAYER_COLUMNS
    cases_frame = pd.DataFrame(case_rows, columns=CASE_COLUMNS)
    metrics = {
        "width": width,
        "depth": depth,
        "samples": samples,
        "cases": len(case_rows),
        "matches_lecture": bool(cases_frame["matches_lecture"].dropna().all()) if cases_frame["matches_lecture"].notna().any() else None,
        "verdicts": {r["case"]: r["verdict"] for r in case_rows},
    }
    tables = {
        "probe": pd.DataFrame(all_rows, columns=layer_columns),
        "probe_cases": cases_frame,
        "probe_hist": pd.DataFrame(all_hist, columns=["case"] + probe.HIST_COLUMNS),
    }
    result = Result("probe", verdict, tables, metrics)
    result.context = {"experiment": f"weight-init lecture: {depth} layers x {width} units, {samples} Gaussian samples, seed {seed}"}
    return result


def _case_row(
    name: str, init: str, activation: str, std: float, layers: pd.DataFrame, verdict: Verdict, expected: str | None
) -> dict[str, Any]:
    trail = probe.activation_trail(layers)
    linear = layers[layers["kind"] == "linear"]
    codes = verdict.codes
    if "vanishing-activations" in codes:
        label = COLLAPSE
    elif "saturated-activations" in codes:
        label = SATURATE
    elif "exploding-activations" in codes:
        label = "exploding"
    elif "dead-relu" in codes:
        label = "dead units"
    else:
        label = WELL
    return {
        "case": name,
        "init": init,
        "activation": activation,
        "init_std": std,
        "first_std": float(trail["std"].iloc[0]),
        "last_std": float(trail["std"].iloc[-1]),
        "max_frac_saturated": float(layers["frac_saturated"].max()) if layers["frac_saturated"].notna().any() else math.nan,
        "max_frac_dead": float(layers["frac_dead"].max()) if layers["frac_dead"].notna().any() else math.nan,
        "g_first": float(linear["grad_norm"].iloc[0]),
        "g_last": float(linear["grad_norm"].iloc[-1]),
        "verdict": label,
        "lecture_verdict": expected or "",
        "matches_lecture": (label == expected) if expected else None,
        "codes": " ".join(codes),
    }

"""The weight-init lecture as a diagnostic: per-layer activation, gradient and update statistics.

`measure` hooks every leaf layer of the model (any nn.Module: built-ins, torchvision models, custom
targets), runs `batches` batches forward and backward at the current weights, then `steps` optimizer
steps of the recipe's optimizer, all inside `engine.preserved` (model, optimizer and RNGs are handed
back as found). One row per layer *call site*: a module called twice per forward (torchvision's
BasicBlock reuses its ReLU) gives two rows, `layer1.0.relu` and `layer1.0.relu#2`, in execution order.

Per row: activation mean, std, min, max; fraction saturated (bounded activations); fraction of dead
units (ReLU, ReLU6); the layer weight's norm, gradient norm and update/weight ratio; non-finite counts.

Definitions (thresholds are module constants below, each with its source):
  saturated     tanh |h| > 0.99, sigmoid h < 0.01 or h > 0.99, hardtanh at its rails. |tanh| > 0.99 means a
                pre-activation beyond ±2.65 (local gradient < 0.02); sigmoid's rails mean beyond ±4.6, the
                "inputs beyond ±5" of DeepDiagnosis (ICSE 2022).
  dead unit     a ReLU or ReLU6 unit (feature of a (N, F) output, channel of a (N, C, ...) output) that is
                never positive for ANY probed sample and position. Per unit, not per element: DeepDiagnosis'
                per-element rule flagged 36 of 78 healthy models.
  activation    the outputs of nonlinearity modules (ReLU, tanh, ..., and Hugging Face's *Activation classes)
                in execution order; when a model has
  depth trail   none (activations applied functionally) the outputs of its Linear/Conv layers instead.

Rules of `decide` (pure: the per-layer table in, a Verdict out):
  non-finite             fail  any NaN/Inf in an activation, a gradient, a weight, or the loss.
  vanishing-activations  fail  std(last activation) / std(first) < 0.25 AND the per-layer factor
                               (that ratio ** 1/(L-1)) < 0.85 AND at least 2/3 of the layer-to-layer steps shrink
                               (a trend, not one jump), over L >= 3 layers of the model's main nonlinearity; or an
                               activation layer whose std < 1e-4 (constant). Lecture: 0.01·randn tanh and Xavier+ReLU
                               "collapse to zero"; Xavier tanh shrinks slowly (ratio ~0.5 at depth 6) and is "just right".
  exploding-activations  fail  the mirror: ratio > 4 AND per-layer factor > 1/0.85 AND 2/3 of the steps grow.
                               Both depth rules judge an initialisation (the probe command, step 0); while training
                               (ProbeCallback, the integrations) a network's activations reflect what it learned
                               (a tiny BERT's pooler grows 7x by step 150 while it reaches 97%), so they are skipped.
  update-ratio-low while training: not reported at steps where the schedule holds the LR below 0.1 of its peak
                               (warmup, the end of a cosine decay): small steps are then the schedule's, not a fault.
  saturated-activations  fail  a bounded activation layer with > 25% of its outputs at the rails (lecture's
                               0.05·randn tanh: ~40-60%; healthy Xavier tanh: < 1%).
  dead-relu              warn  a ReLU or ReLU6 layer with >= 40% dead units (CS231n: "as much as 40% of your
                               network can be dead" at a too-high LR); fail at >= 90%.
  vanishing-gradients    fail  AUTOTRAINER (ICSE 2021): ‖g_first‖/‖g_last‖ < 1e-3 AND ‖g_first‖ < 1e-4, over the
                               weights of the first and last Linear/Conv/Embedding layers in execution order. A token
                               model's first weighted layer is its Embedding: a transformer's first Linear is an
                               attention query projection, whose gradient is ~1e-5 of the head's at init by design
                               (near-uniform attention), not through vanishing (measured on a healthy tiny BERT).
  exploding-gradients    fail  ‖g_first‖/‖g_last‖ > 70 (AUTOTRAINER), or a non-finite gradient. Healthy nets at init
                               measured 0.17 (digits CNN) to 6.5 (resnet18): a 10x margin. The ratio is blind to
                               a net whose gradients are huge everywhere (a huge ReLU init scales both ends alike);
                               that case shows as exploding-activations and, after a step, non-finite.
  update-ratio-high      warn  median ‖Δw‖/‖w‖ of the weight matrices after the last probed step > 1e-1; or, with
                               that median < 1e-5, the probed steps' loss rose above 3x its initial value (the steps
                               diverged and broke the network, so the last step no longer moves it).
  update-ratio-low       warn  median ‖Δw‖/‖w‖ < 1e-5. CS231n: ~1e-3 is healthy; we flag two orders of
                               magnitude either side, so Adam's first steps (lr/rms(w), ~1e-2) stay quiet.
  Advice never contradicts the rest of the evidence: beside a finding about the model itself (STRUCTURAL,
  or dead-relu at fail) an update ratio is called a consequence, with no LR advice; when every weight's
  gradient is exactly zero the message says so and there is no LR advice (evidence zero_gradients); an LR
  change is quoted as a factor only within [3, 1000] ("by 1000x or more" beyond). Findings at step 0 (the
  given weights, before any optimizer step) never blame the learning rate (non-finite: evidence at_init).
  Mid-training honesty: facts["trained"] says whether optimizer steps ran on the given weights before the probe
  (True: nndiag.watch or a callback counted them, or `probe(..., trained=True)`; False: a recipe's fresh model;
  None: not known, and the advice says so). Rows of steps > 0 (probing during training) are trained. On trained
  weights, dead units and NaN/Inf are not said to be at initialisation (evidence trained; at_init False), so the
  learning rate is not ruled out.

`ProbeCallback(every=N)` probes during training (the trainer's callback protocol) at a cost of nothing on
the other steps: hooks exist only while a probe step runs. `init_experiment` is the lecture's experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from nndiag.diagnostics.defaults import PROBE_BATCHES, PROBE_STEPS
from nndiag.findings import DIVERGENCE_FACTOR, LR_FACTOR_MAX, Verdict, lr_move
from nndiag.result import Result
from nndiag.training import batch as batching
from nndiag.training import engine
from nndiag.training.progress import Progress, Ticker

TANH_RAIL = 0.99  # |tanh| above this is saturated (pre-activation beyond ±2.65, local gradient < 0.02)
SIGMOID_RAIL = 0.01  # sigmoid below this or above 1 - this is saturated (pre-activation beyond ±4.6, DeepDiagnosis' ±5)
SATURATED_FRACTION = (
    0.25  # a bounded layer with more than this fraction at the rails is saturated (measured: see the README, probe section)
)
DEAD_FRACTION = 0.4  # warn when this fraction of a ReLU layer's units is dead (CS231n: up to 40% can die at high LR)
DEAD_FAIL_FRACTION = 0.9  # fail when (almost) the whole layer is dead
VANISH_RATIO = 0.25  # std(last activation layer) / std(first) below this: activations collapse with depth
VANISH_PER_LAYER = 0.85  # ... and shrink by at least this factor per layer on average (Xavier+ReLU: 0.71; Xavier tanh: ~0.87-0.95)
VANISH_ABS = 1e-4  # an activation layer with std below this is constant
EXPLODE_RATIO = 4.0  # std(last) / std(first) above this: activations blow up with depth
EXPLODE_PER_LAYER = 1 / 0.85  # ... and grow by at least this factor per layer
GRAD_VANISH_RATIO = 1e-3  # AUTOTRAINER (ICSE 2021): ‖g_first‖/‖g_last‖ below this ...
GRAD_VANISH_ABS = 1e-4  # ... and ‖g_first‖ below this: vanishing gradients
GRAD_EXPLODE_RATIO = 70.0  # AUTOTRAINER (ICSE 2021); healthy nets measured 0.17-6.5 at init (README, probe section), a 10x margin
UPDATE_HIGH = 1e-1  # median update/weight ratio above this: LR too high (CS231n: ~1e-3 healthy)
UPDATE_LOW = 1e-5  # median update/weight ratio below this: LR too low
UPDATE_LR_CUT = 0.1  # during training: no update-ratio-low while the schedule holds the LR below this fraction of its peak (warmup, decay)
DEPTH_CONSISTENT = 2 / 3  # vanishing/exploding activations: at least this share of layer-to-layer steps move the same way
UPDATE_HEALTHY = 1e-3  # CS231n's healthy update/weight ratio, the target an LR advice aims at
STRUCTURAL = (
    "non-finite",
    "vanishing-activations",
    "exploding-activations",
    "saturated-activations",
    "vanishing-gradients",
    "exploding-gradients",
)  # findings about the model itself: an update ratio beside them follows from them, not from the LR
HIST_BINS = 40  # histogram bins per layer
HIST_SAMPLE = 8192  # activation values kept per layer for its histogram (a deterministic strided sample)

RELU_FAMILY = (nn.ReLU, nn.ReLU6)  # units that pass no gradient while negative: the ones that can die
LEAKY = (nn.LeakyReLU, nn.PReLU, nn.RReLU)  # a negative unit still passes a gradient: it cannot die
BOUNDED = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid)  # note: nn.ReLU6 is a Hardtanh subclass
NONLINEAR = (
    RELU_FAMILY
    + LEAKY
    + BOUNDED
    + (nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Hardswish, nn.Softsign, nn.LogSigmoid)
)
WEIGHTED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)  # a token model's first weighted layer (its gradient rule's "first layer")

LAYER_COLUMNS = [
    "step",
    "layer",
    "module",
    "kind",
    "calls",
    "numel",
    "mean",
    "std",
    "min",
    "max",
    "frac_saturated",
    "frac_dead",
    "units",
    "nonfinite_act",
    "weight_norm",
    "grad_norm",
    "update_ratio",
    "nonfinite_grad",
    "nonfinite_weight",
    "lr",
    "lr_peak",
]  # lr: the probed step's LR; lr_peak: the schedule's peak (during training; NaN otherwise)


def kind_of(module: nn.Module) -> str:
    """relu | bounded | activation | linear | embedding | norm | other."""
    if isinstance(module, RELU_FAMILY):
        return "relu"
    if isinstance(module, BOUNDED):
        return "bounded"
    if isinstance(module, NONLINEAR) or type(module).__name__.endswith("Activation"):  # Hugging Face: GELUActivation, ...
        return "activation"
    if isinstance(module, WEIGHTED):
        return "linear"
    if isinstance(module, EMBEDDINGS):
        return "embedding"
    if isinstance(module, NORMS):
        return "norm"
    return "other"


# --------------------------------------------------------------------------------------------
# Recording: forward hooks that reduce each output to a few numbers on the spot
# --------------------------------------------------------------------------------------------


@dataclass
class _Site:
    """Running statistics of one call site (a module's k-th call per forward)."""

    name: str
    module: nn.Module
    kind: str
    calls: int = 0
    numel: int = 0
    total: torch.Tensor | float = 0.0
    total_sq: torch.Tensor | float = 0.0
    low: float = math.inf
    high: float = -math.inf
    saturated: torch.Tensor | float = 0.0
    nonfinite: torch.Tensor | float = 0.0
    alive: torch.Tensor | None = None  # per unit: positive for some sample (ReLU, ReLU6)
    units_ok: bool = True  # False when the unit count changed between calls
    sample: list[torch.Tensor] = field(default_factory=list)


def leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, plus modules that own parameters directly (custom layers), by `layer_name`."""
    found = []
    for name, module in model.named_modules():
        if not any(True for _ in module.children()) or any(True for _ in module.parameters(recurse=False)):
            found.append((layer_name(name, module), module))
    return found


def layer_name(path: str, module: nn.Module) -> str:
    """How tables, messages and figures name a layer: its module path (features.conv1, layer1.0.relu), with its class
    where the path ends in a position in a Sequential or ModuleList, which alone reads like a number: net.3 (Linear),
    and for a model that is itself a Sequential, layer 3 (Linear). The model itself (a custom layer): its class."""
    kind = type(module).__name__
    if not path:
        return kind
    if not path.rsplit(".", 1)[-1].isdigit():
        return path
    return f"{path} ({kind})" if "." in path else f"layer {path} ({kind})"


class Recorder:
    """Hooks on every leaf layer while attached; `rows(step)` turns what was seen into table rows."""

    def __init__(self, model: nn.Module, training_only: bool = False):
        self.model = model
        self.layers = leaf_layers(model)
        self.sites: dict[str, _Site] = {}
        self.training_only = training_only  # ignore forwards in eval mode (a trainer's validation pass)
        self._counts: dict[int, int] = {}
        self._handles: list[Any] = []
        self._active = True

    def _start_forward(self, *_: Any) -> None:
        self._counts.clear()
        self._active = self.model.training or not self.training_only

    def attach(self) -> "Recorder":
        self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name, module)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, module: nn.Module) -> Any:
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if not self._active:
                return
            k = self._counts.get(id(mod), 0) + 1
            self._counts[id(mod)] = k
            tensor = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
                return
            site_name = name if k == 1 else f"{name}#{k}"
            site = self.sites.get(site_name)
            if site is None:
                site = self.sites[site_name] = _Site(site_name, module, kind_of(module))
            self._observe(site, tensor.detach())

        return hook

    @torch.no_grad()
    def _observe(self, site: _Site, t: torch.Tensor) -> None:
        t = t.float()
        wide = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
        total = t.sum(dtype=wide)
        total_sq = torch.linalg.vector_norm(t, dtype=wide).square()
        clean = t
        if not (torch.isfinite(total) and torch.isfinite(total_sq)):  # rare: count and zero the NaN/Inf entries
            finite = torch.isfinite(t)
            site.nonfinite = site.nonfinite + (t.numel() - finite.sum())
            clean = torch.where(finite, t, torch.zeros_like(t))
            total = clean.sum(dtype=wide)
            total_sq = torch.linalg.vector_norm(clean, dtype=wide).square()
        site.calls += 1
        site.numel += t.numel()
        site.total = site.total + total
        site.total_sq = site.total_sq + total_sq
        low, high = torch.aminmax(clean)
        site.low = min(site.low, float(low))
        site.high = max(site.high, float(high))
        if site.kind == "bounded":
            site.saturated = site.saturated + _at_rails(site.module, t).sum()
        if site.kind == "relu" and t.dim() >= 2:
            positive = t > 0
            alive = positive.any(dim=0) if t.dim() == 2 else positive.flatten(2).any(dim=2).any(dim=0)  # per feature / channel
            if site.alive is None:
                site.alive = alive
            elif site.alive.shape == alive.shape:
                site.alive = site.alive | alive
            else:
                site.units_ok = False
        kept = sum(s.numel() for s in site.sample)
        if kept < HIST_SAMPLE:
            flat = clean.reshape(-1)
            stride = max(1, flat.numel() // (HIST_SAMPLE - kept))
            site.sample.append(flat[::stride][: HIST_SAMPLE - kept].to("cpu", copy=True))

    def rows(self, step: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(layer rows without the weight columns, histogram rows)."""
        rows, hist = [], []
        for site in self.sites.values():
            n = max(site.numel, 1)
            mean = float(site.total) / n
            var = max(float(site.total_sq) / n - mean * mean, 0.0)
            units = int(site.alive.numel()) if site.alive is not None and site.units_ok else 0
            dead = float((~site.alive).sum()) / units if units else math.nan
            rows.append(
                {
                    "step": step,
                    "layer": site.name,
                    "module": type(site.module).__name__,
                    "kind": site.kind,
                    "calls": site.calls,
                    "numel": site.numel,
                    "mean": mean,
                    "std": math.sqrt(var),
                    "min": site.low,
                    "max": site.high,
                    "frac_saturated": float(site.saturated) / n if site.kind == "bounded" else math.nan,
                    "frac_dead": dead,
                    "units": units,
                    "nonfinite_act": int(site.nonfinite),
                }
            )
            hist += _histogram(step, site)
        return rows, hist


def _at_rails(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Tanh):
        return t.abs() > TANH_RAIL
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return (t < SIGMOID_RAIL) | (t > 1 - SIGMOID_RAIL)
    lo, hi = getattr(module, "min_val", -1.0), getattr(module, "max_val", 1.0)  # Hardtanh
    return (t <= lo) | (t >= hi)


def _histogram(step: int, site: _Site) -> list[dict[str, Any]]:
    if not site.sample:
        return []
    values = torch.cat(site.sample).numpy()
    if isinstance(site.module, nn.Tanh):
        lo, hi = -1.0, 1.0
    elif isinstance(site.module, nn.Sigmoid):
        lo, hi = 0.0, 1.0
    else:
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    return [
        {"step": step, "layer": site.name, "bin_left": float(edges[i]), "bin_right": float(edges[i + 1]), "count": int(c)}
        for i, c in enumerate(counts)
    ]


def weight_of(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.requires_grad else None


def add_weight_columns(
    rows: list[dict[str, Any]], recorder: Recorder, grad_norms: dict[int, float], update_ratios: dict[int, float] | None = None
) -> None:
    """Fill weight_norm / grad_norm / update_ratio from the module's `weight` (first call site only)."""
    seen: set[int] = set()
    for row in rows:
        module = recorder.sites[row["layer"]].module
        w = weight_of(module)
        row.update(weight_norm=math.nan, grad_norm=math.nan, update_ratio=math.nan, nonfinite_grad=0, nonfinite_weight=0)
        if w is None or id(w) in seen:
            continue
        seen.add(id(w))
        row["weight_norm"] = float(w.detach().float().norm())
        row["nonfinite_weight"] = _nonfinite(w, row["weight_norm"])
        row["grad_norm"] = grad_norms.get(id(w), math.nan)
        if w.grad is not None:
            row["nonfinite_grad"] = _nonfinite(w.grad, row["grad_norm"])
        if update_ratios is not None:
            row["update_ratio"] = update_ratios.get(id(w), math.nan)


@torch.no_grad()
def _nonfinite(t: torch.Tensor, norm: float) -> int:
    """Non-finite entries of `t`; counted only when its norm is not finite (one pass in the common case)."""
    return 0 if math.isfinite(norm) else int((~torch.isfinite(t.detach())).sum())


def grad_norms_now(model: nn.Module) -> dict[int, float]:
    return {id(p): float(p.grad.detach().float().norm()) for p in model.parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------
# Measuring: the `probe` command
# --------------------------------------------------------------------------------------------


def measure(
    exp: Any, batches: int = PROBE_BATCHES, steps: int = PROBE_STEPS, progress: Progress | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(layers, params, histograms, facts). Layers: one row per call site at the current weights.
    `progress` hears every probed batch and optimizer step."""
    model = exp.model
    generator = torch.Generator().manual_seed(exp.recipe.seed)
    probe_batches = []
    for batch in exp.data.train.batches(exp.recipe.train.batch_size, shuffle=True, generator=generator):
        probe_batches.append(batch)
        if len(probe_batches) >= batches:
            break
    recorder = Recorder(model)
    param_rows: list[dict[str, Any]] = []
    names = {id(p): n for n, p in model.named_parameters()}
    losses: list[float] = []
    ticker = Ticker(progress, "probe", len(probe_batches) + steps)
    with engine.preserved(model):
        model.train()
        optimizer = exp.optimizer()
        sums: dict[int, float] = {}
        recorder.attach()
        try:
            for batch in probe_batches:
                optimizer.zero_grad(set_to_none=True)
                loss = exp.scorer(model, batch).loss
                losses.append(float(loss.detach()))
                ticker(len(losses), losses[-1])
                loss.backward()
                for key, value in grad_norms_now(model).items():
                    sums[key] = sums.get(key, 0.0) + value / len(probe_batches)
        finally:
            recorder.detach()
        rows, hist = recorder.rows(0)
        add_weight_columns(rows, recorder, sums)  # gradient columns at the probed weights
        for p in model.parameters():
            if p.requires_grad:
                param_rows.append(_param_row(0, names[id(p)], p, sums.get(id(p), math.nan), math.nan))
        ratios: dict[int, float] = {}  # of the last step after which every weight was still finite
        diverged_at = None
        for s in range(1, steps + 1):
            batch = probe_batches[(s - 1) % len(probe_batches)]
            before = {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}
            loss_t = exp.step(optimizer, batch).loss
            losses.append(float(loss_t))
            ticker(len(losses), losses[-1])
            step_ratios = update_ratios(model, before)
            grads = grad_norms_now(model)
            for p in model.parameters():
                if p.requires_grad:
                    param_rows.append(_param_row(s, names[id(p)], p, grads.get(id(p), math.nan), step_ratios.get(id(p), math.nan)))
            if not all(math.isfinite(float(p.detach().float().norm())) for p in model.parameters()):
                diverged_at = s  # the weights are NaN/Inf: later steps would tell nothing more
                if not ratios:
                    ratios = {k: v for k, v in step_ratios.items()}
                break
            ratios = step_ratios
        for row in rows:  # the update ratio of the last sound step; weights that went non-finite
            w = weight_of(recorder.sites[row["layer"]].module)
            if w is not None and not math.isnan(row["grad_norm"]):
                row["update_ratio"] = ratios.get(id(w), math.nan)
                row["nonfinite_weight"] = max(row["nonfinite_weight"], _nonfinite(w, float(w.detach().float().norm())))
    ticker.finish()
    facts = {
        "batches": len(probe_batches),
        "steps": steps,
        "examples": sum(batching.size(b) for b in probe_batches),
        "initial_loss": losses[0] if losses else math.nan,
        "losses": losses,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "optimizer": type(optimizer).__name__,
        "diverged_step": diverged_at,
    }
    return (
        pd.DataFrame(rows, columns=LAYER_COLUMNS),
        pd.DataFrame(param_rows, columns=PARAM_COLUMNS),
        pd.DataFrame(hist, columns=HIST_COLUMNS),
        facts,
    )


PARAM_COLUMNS = ["step", "param", "shape", "numel", "norm", "grad_norm", "update_ratio"]
HIST_COLUMNS = ["step", "layer", "bin_left", "bin_right", "count"]


def _param_row(step: int, name: str, p: torch.Tensor, grad_norm: float, ratio: float) -> dict[str, Any]:
    return {
        "step": step,
        "param": name,
        "shape": "x".join(map(str, p.shape)) or "scalar",
        "numel": p.numel(),
        "norm": float(p.detach().float().norm()),
        "grad_norm": grad_norm,
        "update_ratio": ratio,
    }


@torch.no_grad()
def update_ratios(model: nn.Module, before: dict[int, torch.Tensor]) -> dict[int, float]:
    """‖w_after − w_before‖ / ‖w_before‖ per parameter (CS231n's update scale / param scale); NaN for zero weights."""
    out = {}
    for p in model.parameters():
        old = before.get(id(p))
        if old is None:
            continue
        scale = float(old.float().norm())
        out[id(p)] = float((p.detach().float() - old.float()).norm()) / scale if scale > 0 else math.nan
    return out


# --------------------------------------------------------------------------------------------
# Deciding: pure over the per-layer table
# --------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def activation_trail(layers: pd.DataFrame) -> pd.DataFrame:
    """The activation layers in execution order: the outputs of the model's main nonlinearity (its most
    frequent activation class: a BERT's GELUs, not its pooler's one tanh on a side branch), or the
    Linear/Conv outputs if it has none. Like is compared with like through depth."""
    acts = layers[layers["kind"].isin(["relu", "bounded", "activation"])]
    if not len(acts):
        return layers[layers["kind"] == "linear"]
    main = acts["module"].value_counts(sort=True).index[0]
    return acts[acts["module"] == main]


def decide(layers: pd.DataFrame, facts: dict[str, Any] | None = None) -> Verdict:
    """The verdict over the per-layer table (one or more probed steps). Pure: numbers in, findings out.

    With several steps, each rule is checked per step and reported once, at the first step it fires.
    """
    verdict = Verdict()
    facts = facts or {}
    if layers.empty:
        return verdict
    seen: set[str] = set()
    for step, frame in layers.groupby("step", sort=True):
        step_verdict = _decide_step(frame.reset_index(drop=True), facts if step == layers["step"].min() else {})
        multi = layers["step"].nunique() > 1
        for finding in step_verdict.findings:
            if finding.code in seen:
                continue
            seen.add(finding.code)
            if multi:
                finding.message = f"at step {int(step)}: {finding.message}"
                finding.evidence["step"] = int(step)
            verdict.findings.append(finding)
    return verdict


def _decide_step(layers: pd.DataFrame, facts: dict[str, Any]) -> Verdict:
    verdict = Verdict()
    trained = True if int(layers["step"].iloc[0]) > 0 else facts.get("trained")  # issue 19: optimizer steps ran before?
    _rule_nonfinite(verdict, layers, facts, trained)
    if not trained:  # the depth rules judge an initialisation; a trained net's activations reflect what it learned
        _rule_depth(verdict, layers)
    _rule_saturated(verdict, layers)
    _rule_dead(verdict, layers, trained)
    _rule_gradients(verdict, layers)
    _rule_updates(verdict, layers, facts)
    return verdict


def _rule_nonfinite(verdict: Verdict, layers: pd.DataFrame, facts: dict[str, Any], trained: bool | None = None) -> None:
    bad = layers[(layers["nonfinite_act"] > 0) | (layers["nonfinite_grad"] > 0) | (layers["nonfinite_weight"] > 0)]
    losses = [v for v in facts.get("losses", []) if not math.isfinite(v)]
    if bad.empty and not losses:
        return
    first = bad.iloc[0] if len(bad) else None
    parts = [
        f"{int(layers[c].sum())} {what}"
        for c, what in (("nonfinite_act", "activation"), ("nonfinite_grad", "gradient"), ("nonfinite_weight", "weight"))
        if layers[c].sum() > 0
    ]
    where = f"in {len(bad)} layers, first {first['layer']} ({', '.join(parts)} entries)" if first is not None else "in the loss"
    # at the probed weights (before any optimizer step), or only after the probed steps?
    probed = int(facts.get("batches") or 0)
    given = bool(
        layers["nonfinite_act"].sum() > 0
        or layers["nonfinite_grad"].sum() > 0
        or any(not math.isfinite(v) for v in facts.get("losses", [])[:probed])
    )  # already at the weights given
    at_init = given and trained is not True  # trained weights are not an initialisation
    when = ""
    if first is not None and not given:
        step = facts.get("diverged_step")
        when = f"; the weights blew up during the probed optimizer steps{f' (at step {step})' if step else ''}"
    if at_init:
        advice = (
            "Look at the first layer named: NaN/Inf in the inputs (check the data), a weight already NaN (a bad checkpoint "
            "or init), or an init so large that the forward pass overflows. "
            + (
                "No optimizer step has run yet, so the learning rate is not the cause."
                if trained is False
                else "If no optimizer step has run on these weights, the learning rate is not the cause (pass trained=True if they were trained)."
            )
        )
    elif given:
        advice = (
            "The trained weights given already produce NaN/Inf: training blew up before this probe. Most often the learning "
            f"rate is too high ({lr_move('lower')}); clip gradients (train.grad_clip), and look "
            "at the first layer named and at the inputs for NaN/Inf."
        )
    else:
        advice = (
            "The weights were finite before the probed optimizer steps and blew up during them: the learning rate is so "
            f"high that a step overflows ({lr_move('lower')}), or the init is too large; "
            "clip gradients (train.grad_clip)."
        )
    verdict.add(
        "non-finite",
        "fail",
        f"NaN/Inf values {where}{when}" + (f"; {len(losses)} losses were NaN/Inf" if losses else ""),
        advice,
        layers=list(bad["layer"])[:20],
        first_layer=None if first is None else first["layer"],
        nonfinite_losses=len(losses),
        at_init=at_init,
        trained=trained,
    )


def _rule_depth(verdict: Verdict, layers: pd.DataFrame) -> None:
    trail = activation_trail(layers)
    stds = trail["std"].to_numpy(dtype=float)
    names = list(trail["layer"])
    if len(stds) == 0 or not np.isfinite(stds).all():
        return
    flat = [n for n, s in zip(names, stds) if s < VANISH_ABS]
    evidence = {"layers": names, "std": [float(s) for s in stds]}
    if len(stds) >= 3 and stds[0] > 0:
        ratio = stds[-1] / stds[0]
        factor = ratio ** (1 / (len(stds) - 1)) if ratio > 0 else 0.0
        steps = np.diff(stds)
        shrinking, growing = float(np.mean(steps < 0)), float(np.mean(steps > 0))  # a trend, not one jump (a side branch's head)
        evidence.update(ratio=float(ratio), per_layer_factor=float(factor), share_shrinking=shrinking, share_growing=growing)
        trail_text = " → ".join(_fmt(s) for s in stds[:: max(1, len(stds) // 8)])
        if ratio < VANISH_RATIO and factor < VANISH_PER_LAYER and shrinking >= DEPTH_CONSISTENT:
            verdict.add(
                "vanishing-activations",
                "fail",
                f"activations collapse with depth: std falls from {_fmt(stds[0])} at {names[0]} to {_fmt(stds[-1])} at {names[-1]}, "
                f"{ratio:.3g}x over {len(stds)} layers ({factor:.2f}x per layer; {trail_text})",
                "The init is too small for this depth and activation: use Xavier (std 1/sqrt(fan_in)) for tanh, Kaiming "
                "(std sqrt(2/fan_in)) for ReLU (model.args.init), or add BatchNorm. Deep layers see ~0 inputs, so their weights get ~0 gradients.",
                **evidence,
            )
            return
        if ratio > EXPLODE_RATIO and factor > EXPLODE_PER_LAYER and growing >= DEPTH_CONSISTENT:
            verdict.add(
                "exploding-activations",
                "fail",
                f"activations grow with depth: std rises from {_fmt(stds[0])} at {names[0]} to {_fmt(stds[-1])} at {names[-1]}, "
                f"{ratio:.3g}x over {len(stds)} layers ({factor:.2f}x per layer; {trail_text})",
                "The init is too large: use Kaiming (ReLU) or Xavier (tanh) scaling, std proportional to 1/sqrt(fan_in); add "
                "BatchNorm/LayerNorm, or check a custom layer that multiplies its output.",
                **evidence,
            )
            return
    if flat:
        verdict.add(
            "vanishing-activations",
            "fail",
            f"{len(flat)} activation layers are constant (std < {VANISH_ABS:g}): {', '.join(flat[:6])}",
            "Those layers pass no signal: the init is far too small or the inputs are constant; check model.args.init and the data.",
            **evidence,
            constant_layers=flat,
        )


def _rule_saturated(verdict: Verdict, layers: pd.DataFrame) -> None:
    bounded = layers[layers["kind"] == "bounded"].dropna(subset=["frac_saturated"])
    bad = bounded[bounded["frac_saturated"] > SATURATED_FRACTION]
    if bad.empty:
        return
    worst = bad.loc[bad["frac_saturated"].idxmax()]
    listing = ", ".join(f"{r.layer}: {r.frac_saturated:.0%}" for r in bad.itertuples())
    verdict.add(
        "saturated-activations",
        "fail",
        f"{len(bad)} of {len(bounded)} tanh/sigmoid layers are saturated (more than {SATURATED_FRACTION:.0%} of outputs at the rails; "
        f"worst {worst['layer']} at {worst['frac_saturated']:.0%}): {listing}",
        "Saturated units have local gradient ~0, so nothing below them learns. The init is too large for tanh/sigmoid: use Xavier "
        "(std 1/sqrt(fan_in)); standardise the inputs (data.normalize: true); or switch to ReLU with Kaiming init.",
        layers=list(bad["layer"]),
        frac_saturated=[float(v) for v in bad["frac_saturated"]],
        threshold=SATURATED_FRACTION,
    )


def _rule_dead(verdict: Verdict, layers: pd.DataFrame, trained: bool | None = None) -> None:
    relus = layers[layers["kind"] == "relu"].dropna(subset=["frac_dead"])
    bad = relus[relus["frac_dead"] >= DEAD_FRACTION]
    if bad.empty:
        return
    worst = float(bad["frac_dead"].max())
    listing = ", ".join(f"{r.layer}: {r.frac_dead:.0%} of {r.units}" for r in bad.itertuples())
    at_init = bool((layers["step"] == 0).all()) and trained is not True  # the given weights, and no training step before them
    if at_init and trained is False:
        advice = (
            "Dead units get zero gradient and never recover, so no learning rate can revive them; no optimizer step has run "
            "yet, so the learning rate did not kill them. Causes: a large negative bias, or an init that pushes "
            "pre-activations negative. Try Kaiming init with zero bias, LeakyReLU, or BatchNorm before the ReLU."
        )
    elif at_init:
        advice = (
            "Dead units get zero gradient and never recover, so no learning rate can revive them. If no optimizer step has run "
            "on these weights, the learning rate did not kill them: a large negative bias or an init that pushes pre-activations "
            "negative did (try Kaiming init with zero bias, LeakyReLU, or BatchNorm before the ReLU); if they were trained, a "
            "too-high learning rate is the usual cause (pass trained=True to say so)."
        )
    else:
        advice = (
            "Dead units get zero gradient and never recover. Causes: a too-high learning rate knocked them out (lower optim.lr), a large "
            "negative bias, or an init that pushes pre-activations negative. Try Kaiming init with zero bias, LeakyReLU, or BatchNorm before the ReLU."
        )
    verdict.add(
        "dead-relu",
        "fail" if worst >= DEAD_FAIL_FRACTION else "warn",
        f"{len(bad)} ReLU layers have >= {DEAD_FRACTION:.0%} dead units (never positive for any probed sample): {listing}",
        advice,
        layers=list(bad["layer"]),
        frac_dead=[float(v) for v in bad["frac_dead"]],
        threshold=DEAD_FRACTION,
        trained=trained,
    )


def _rule_gradients(verdict: Verdict, layers: pd.DataFrame) -> None:
    weighted = layers[layers["kind"].isin(["linear", "embedding"])].dropna(subset=["grad_norm"])
    if len(weighted) < 2:
        return
    first, last = weighted.iloc[0], weighted.iloc[-1]
    g_first, g_last = float(first["grad_norm"]), float(last["grad_norm"])
    if not (math.isfinite(g_first) and math.isfinite(g_last)):
        verdict.add(
            "exploding-gradients",
            "fail",
            f"gradient norms are not finite (first weighted layer {first['layer']}: {g_first}, last {last['layer']}: {g_last})",
            "Gradients overflowed: lower optim.lr, clip gradients (train.grad_clip), check the init scale and the inputs for NaN/Inf.",
            first_layer=first["layer"],
            last_layer=last["layer"],
            g_first=g_first,
            g_last=g_last,
        )
        return
    ratio = g_first / g_last if g_last > 0 else (math.inf if g_first > 0 else math.nan)
    evidence = {"first_layer": first["layer"], "last_layer": last["layer"], "g_first": g_first, "g_last": g_last, "ratio": ratio}
    if ratio < GRAD_VANISH_RATIO and g_first < GRAD_VANISH_ABS:
        verdict.add(
            "vanishing-gradients",
            "fail",
            f"the first layer's gradient norm {_fmt(g_first)} ({first['layer']}) is {ratio:.3g}x the last layer's {_fmt(g_last)} ({last['layer']}): "
            "the early layers barely learn",
            "Gradients vanish through depth: use Kaiming/Xavier init matched to the activation, ReLU instead of sigmoid/tanh in deep stacks, "
            "BatchNorm, or residual connections.",
            **evidence,
            thresholds={"ratio": GRAD_VANISH_RATIO, "g_first": GRAD_VANISH_ABS},
        )
    elif ratio > GRAD_EXPLODE_RATIO:
        verdict.add(
            "exploding-gradients",
            "fail",
            f"the first layer's gradient norm {_fmt(g_first)} ({first['layer']}) is {ratio:.3g}x the last layer's {_fmt(g_last)} ({last['layer']})",
            "Gradients grow through depth: reduce the init scale, add normalisation, clip gradients (train.grad_clip), lower optim.lr.",
            **evidence,
            threshold=GRAD_EXPLODE_RATIO,
        )


def _rule_updates(verdict: Verdict, layers: pd.DataFrame, facts: dict[str, Any]) -> None:
    """update-ratio-high / -low, with advice the rest of the evidence allows (see `_update_advice`)."""
    weighted = layers[layers["kind"].isin(["linear"])].dropna(subset=["update_ratio"])
    ratios = weighted["update_ratio"].to_numpy(dtype=float)
    if len(ratios) == 0:
        return
    if not np.isfinite(ratios).all():
        return  # a non-finite update is the non-finite rule's business
    median = float(np.median(ratios))
    evidence: dict[str, Any] = {"median": median, "layers": list(weighted["layer"]), "update_ratio": [float(r) for r in ratios]}
    structural = [f.code for f in verdict.findings if f.code in STRUCTURAL or (f.code == "dead-relu" and f.severity == "fail")]
    if structural:
        evidence["consequence"] = structural  # the update ratio follows from what these findings describe
    diverged = _probed_steps_diverged(facts)
    healthy = "(CS231n: ~1e-3 is healthy)"  # UPDATE_HEALTHY
    if median > UPDATE_HIGH or (diverged and median < UPDATE_LOW):
        high = weighted[weighted["update_ratio"] > UPDATE_HIGH]
        if median > UPDATE_HIGH:
            message = (
                f"one step changes the weights by a median {median:.3g} of their norm {healthy}; "
                f"{len(high)} of {len(weighted)} layers above {UPDATE_HIGH:g}, worst {high.loc[high['update_ratio'].idxmax(), 'layer']} "
                f"at {high['update_ratio'].max():.3g}"
            )
        else:
            message = (
                f"the probed optimizer steps diverged: the loss rose from {diverged[0]:.4g} to {diverged[1]:.4g} "
                f"({diverged[1] / diverged[0]:.3g}x) within {facts.get('steps')} steps; the last step's median update ratio "
                f"{median:.3g} is that of a network the first steps broke"
            )
        if diverged:
            evidence.update(probed_initial_loss=diverged[0], probed_peak_loss=diverged[1])
        # the update ratio over a healthy one measures how far to lower the LR; a run that diverged measures nothing
        # (its last ratio is a broken network's), so lr-find is the one to say how far
        factor = median / UPDATE_HEALTHY if median > UPDATE_HIGH else None
        if not structural and factor is not None:
            evidence["lr_factor"] = min(factor, 10 * LR_FACTOR_MAX)  # what a root cause quotes (lr_move); finite in JSON
        verdict.add("update-ratio-high", "warn", message, _update_advice("lower", factor, structural), **evidence, threshold=UPDATE_HIGH)
    elif median < UPDATE_LOW and _lr_fraction(layers) >= UPDATE_LR_CUT:  # a schedule's warmup or decay explains small steps
        grads = weighted["grad_norm"].to_numpy(dtype=float)
        zero = bool(len(grads) and np.isfinite(grads).all() and (grads == 0).all())
        if zero:
            message = (
                f"the weights did not move at all (median update ratio {median:.3g}): the gradient of every Linear/Conv weight "
                "is exactly zero"
            )
            advice = (
                "No learning rate moves a weight whose gradient is exactly zero, so do not raise optim.lr. "
                + (f"See {', '.join(structural)} above. " if structural else "")
                + "Look for ReLU units dead from the start, a graph cut by .detach(), torch.no_grad() or .data, or a loss that "
                "does not depend on the model's outputs."
            )
            evidence["zero_gradients"] = True
        elif median == 0:
            message = (
                "the weights did not move at all during the probed steps (median update ratio 0) although their gradients are not zero"
            )
            advice = (
                "The optimizer did not update them: check that it was given the model's parameters (a model rebuilt after the "
                "optimizer was created, parameters replaced in forward) and that optim.lr is not 0."
            )
            evidence["weights_stalled"] = True
        else:
            message = f"one step changes the weights by a median {median:.3g} of their norm {healthy}; the model will barely move"
            advice = _update_advice("raise", UPDATE_HEALTHY / median, structural)
            if not structural:
                evidence["lr_factor"] = min(UPDATE_HEALTHY / median, 10 * LR_FACTOR_MAX)
                advice += " Also check for frozen parameters or an optimizer that was not given the model's parameters."
        verdict.add("update-ratio-low", "warn", message, advice, **evidence, threshold=UPDATE_LOW)


def _lr_fraction(layers: pd.DataFrame) -> float:
    """The probed step's LR as a fraction of the schedule's peak (1 when unknown: the probe command, no schedule)."""
    if "lr" not in layers or not len(layers):
        return 1.0
    lr, peak = float(layers["lr"].iloc[0]), float(layers["lr_peak"].iloc[0])
    return lr / peak if math.isfinite(lr) and math.isfinite(peak) and peak > 0 else 1.0


def _probed_steps_diverged(facts: dict[str, Any]) -> tuple[float, float] | None:
    """(initial loss, peak loss) when the probed optimizer steps drove the loss above DIVERGENCE_FACTOR x its initial value."""
    losses = [float(v) for v in facts.get("losses", [])]
    probed = int(facts.get("batches") or 0)
    if not probed or len(losses) <= probed:
        return None
    initial = float(np.mean(losses[:probed]))
    later = [v for v in losses[probed:] if math.isfinite(v)]
    if not (math.isfinite(initial) and initial > 0 and later):
        return None
    peak = max(later)
    return (initial, peak) if peak > DIVERGENCE_FACTOR * initial else None


def _update_advice(direction: str, factor: float | None, structural: list[str]) -> str:
    """LR advice in sane terms: the measured factor (nndiag.findings.lr_move), and none when the model itself is the problem."""
    if structural:
        return (
            f"This is probably a consequence of {', '.join(structural)} above (the update ratio follows from the weights' scale "
            "and gradients): fix that first and probe again before changing optim.lr."
        )
    too = "high" if direction == "lower" else "low"
    if factor is None:
        return f"The learning rate is too {too}: {lr_move(direction)}."
    return f"The learning rate is too {too}: {lr_move(direction, factor)}, or run `nndiag lr-find`."


# --------------------------------------------------------------------------------------------
# Running: the `probe` command
# --------------------------------------------------------------------------------------------


def worst_layers(layers: pd.DataFrame, verdict: Verdict) -> list[str]:
    """The layers the findings name (for highlighting in tables and figures)."""
    names: list[str] = []
    for f in verdict.findings:
        for key in ("layers", "constant_layers"):
            if f.code in ("vanishing-activations", "exploding-activations") and key == "layers":
                continue  # the whole trail; highlight only its ends
            names += [n for n in f.evidence.get(key, []) if n not in names]
        for key in ("first_layer", "last_layer"):
            if f.evidence.get(key) and f.evidence[key] not in names:
                names.append(f.evidence[key])
        if f.code in ("vanishing-activations", "exploding-activations") and f.evidence.get("layers"):
            names += [n for n in (f.evidence["layers"][0], f.evidence["layers"][-1]) if n not in names]
    return names


def metrics_of(layers: pd.DataFrame, facts: dict[str, Any]) -> dict[str, Any]:
    trail = activation_trail(layers)
    ratios = layers["update_ratio"].dropna()
    return {
        "layers": int(len(layers)),
        "activation_layers": int(len(trail)),
        "first_activation_std": float(trail["std"].iloc[0]) if len(trail) else math.nan,
        "last_activation_std": float(trail["std"].iloc[-1]) if len(trail) else math.nan,
        "max_frac_saturated": float(layers["frac_saturated"].max()) if layers["frac_saturated"].notna().any() else None,
        "max_frac_dead": float(layers["frac_dead"].max()) if layers["frac_dead"].notna().any() else None,
        "median_update_ratio": float(ratios.median()) if len(ratios) else None,
        "initial_loss": facts.get("initial_loss"),
        "probed_examples": facts.get("examples"),
        "steps": facts.get("steps"),
    }


def run(
    exp: Any, batches: int = PROBE_BATCHES, steps: int = PROBE_STEPS, trained: bool | None = False, progress: Progress | None = None
) -> Result:
    """`trained`: did optimizer steps run on the model's weights before the probe (None: not known; see decide)."""
    layers, params, hist, facts = measure(exp, batches, steps, progress)
    facts["trained"] = trained
    verdict = decide(layers, facts)
    metrics = metrics_of(layers, facts)
    metrics["worst_layers"] = worst_layers(layers, verdict)
    return Result("probe", verdict, {"probe": layers, "probe_params": params, "probe_hist": hist}, metrics)


# --------------------------------------------------------------------------------------------
# Probing during training: the trainer callback
# --------------------------------------------------------------------------------------------


class ProbeCallback:
    """Probe every `every`-th optimizer step of a `Trainer` run (steps every, 2·every, ...).

    On step s-1 it arms (registers hooks, copies the weights); step s's own forward/backward is
    recorded; on step s it collects (activations, gradient norms, update/weight ratios) and removes
    the hooks. Steps in between run with no hooks at all. Forwards in eval mode (the trainer's
    validation pass) are ignored. `rows` is the per-layer table over all probed steps (the CSV
    `probe.csv`), `histograms` the histogram table, `verdict()` the findings over all of them.
    """

    def __init__(self, every: int = 100):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.every = every
        self._rows: list[dict[str, Any]] = []
        self._hist: list[dict[str, Any]] = []
        self._recorder: Recorder | None = None
        self._before: dict[int, torch.Tensor] = {}
        self._armed_for: int | None = None
        self._lr: tuple[float, float] = (math.nan, math.nan)

    def on_step(self, trainer: Any, step: int, loss: float) -> None:
        if self._armed_for == step:
            self._collect(trainer.model, step)
        if (step + 1) % self.every == 0:
            self._arm(trainer.model, step + 1, getattr(trainer, "optimizer", None))

    def on_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        return None

    def _arm(self, model: nn.Module, step: int, optimizer: Any = None) -> None:
        self._recorder = Recorder(model, training_only=True).attach()
        self._before = {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}
        self._armed_for = step
        self._lr = _scheduled_lr(optimizer)  # the LR the probed step uses (the scheduler has already moved it)

    def _collect(self, model: nn.Module, step: int) -> None:
        recorder = self._recorder
        assert recorder is not None
        recorder.detach()
        rows, hist = recorder.rows(step)
        add_weight_columns(rows, recorder, grad_norms_now(model), update_ratios(model, self._before))
        for row in rows:
            row["lr"], row["lr_peak"] = self._lr
        self._rows += rows
        self._hist += hist
        self._recorder, self._before, self._armed_for = None, {}, None

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove hooks left armed when training stopped before the probe step."""
        if self._recorder is not None:
            self._recorder.detach()
        self._recorder, self._before, self._armed_for = None, {}, None

    @property
    def rows(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows, columns=LAYER_COLUMNS)

    @property
    def histograms(self) -> pd.DataFrame:
        return pd.DataFrame(self._hist, columns=HIST_COLUMNS)

    def verdict(self) -> Verdict:
        return decide(self.rows)


def _scheduled_lr(optimizer: Any) -> tuple[float, float]:
    """(the first param group's LR now, the schedule's peak: its `initial_lr` when a torch scheduler set one, else the LR now)."""
    if optimizer is None or not getattr(optimizer, "param_groups", None):
        return math.nan, math.nan
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    return lr, float(group.get("initial_lr", lr))

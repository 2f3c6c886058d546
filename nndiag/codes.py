"""The registry of finding codes: one source of truth for what each code means, its rule with the
thresholds the code uses now, where the rule comes from, and what to do.

`nndiag explain CODE` prints an entry; the docs' code tables are generated from here (tools/docgen.py)
and a test fails when they differ. The thresholds are not copied: a rule names the module constants
it uses as `{module.CONSTANT}`, and `thresholds()` reads their current values from the module's
source (with `ast`, so this costs no torch import). Diagnostics keep their constants where they are
defined and documented; a finding's own message and advice quote the numbers of the case at hand.

This module imports nothing heavy: `nndiag explain` starts as fast as `nndiag --help`.

May import: nothing of nndiag.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SEVERITIES = ("info", "warn", "fail")


@dataclass(frozen=True)
class Code:
    code: str
    commands: tuple[str, ...]  # the commands that raise it (train raises every curves code too)
    severity: str  # info | warn | fail, or e.g. "warn (fail at >= {probe.DEAD_FAIL_FRACTION})"
    meaning: str  # one line: what it says about the training
    rule: str  # when it fires, thresholds as {module.CONSTANT}
    source: str  # the lecture note, paper or measurement behind the rule
    advice: str  # what to do next

    def render(self, text: str) -> str:
        """`text` with every {module.CONSTANT} replaced by its current value."""
        return PLACEHOLDER.sub(lambda m: _show(constant(m.group(1), m.group(2))), text)


PLACEHOLDER = re.compile(r"\{([a-z_]+)\.([A-Z][A-Z0-9_]*)\}")
MODULES = {  # where each placeholder's module lives, relative to the package
    "check_loss": "diagnostics/check_loss.py",
    "overfit_small": "diagnostics/overfit_small.py",
    "lr_find": "diagnostics/lr_find.py",
    "search": "diagnostics/search.py",
    "curves": "diagnostics/curves.py",
    "probe": "diagnostics/probe.py",
    "findings": "findings.py",
    "defaults": "diagnostics/defaults.py",
    "lr_trials": "diagnostics/lr_trials.py",
}

ENTRIES = [
    # -- check-loss ------------------------------------------------------------------------------
    Code(
        "initial-loss-high",
        ("check-loss",),
        "fail",
        "The untrained model is confidently wrong: its loss is far above what the loss function predicts.",
        "mean loss over --batches ({defaults.CHECK_LOSS_BATCHES}) training batches, dropout and weight decay off, > expected x "
        "(1 + tolerance); --tolerance {defaults.CHECK_LOSS_TOLERANCE}. Expected: ln C for softmax cross-entropy (C from the "
        "logits' class axis), (C-1)·margin/C for multi_margin, ln 2 for bce, 1/C for mse on class labels, the target variance "
        "for regression.",
        "CS231n, babysitting the learning process: \"make sure you're getting the loss you expect when you initialize with "
        'small parameters" (2.302 for 10 classes). A healthy Kaiming/Xavier net measured 1.3-1.8x ln C, hence a factor 2.',
        "Scale down the last layer's initial weights (x0.01 or zeros), use Xavier/Kaiming init, and normalise the inputs "
        "(and the regression targets).",
    ),
    Code(
        "initial-loss-low",
        ("check-loss",),
        "fail",
        "The untrained model already beats chance: it is not fresh, or the labels leak into the inputs.",
        "mean loss at initialisation < expected / (1 + tolerance); --tolerance {defaults.CHECK_LOSS_TOLERANCE}.",
        "CS231n: the initial loss of an untrained softmax classifier is ln C.",
        "Check that the model is freshly initialised (not loaded from a checkpoint), that no label leaks into the inputs, "
        "and that the loss is the one the recipe names.",
    ),
    Code(
        "non-finite-loss",
        ("check-loss",),
        "fail",
        "The loss is NaN or Inf before any training.",
        "any measured batch loss at initialisation is NaN/Inf.",
        "A NaN at step 0 cannot come from the learning rate: no step has run.",
        "Look for NaN/Inf in the inputs, a log or division of zero in the model or loss, an init scale that overflows, "
        "and targets that are not valid class indices.",
    ),
    Code(
        "regularization-no-effect",
        ("check-loss",),
        "warn",
        "Weight decay is on but adds almost nothing to the objective.",
        "weight_decay > 0 and the L2 term it adds (½·wd·‖w‖² over the optimizer's groups) < {check_loss.NEGLIGIBLE_PENALTY} of the loss.",
        'CS231n: "increase the regularization strength: the loss should go up".',
        "Raise weight_decay (1e-5 to 1e-3 are usual starting points), or check that the optimizer's parameter groups carry it.",
    ),
    Code(
        "inputs-not-normalized",
        ("check-loss",),
        "warn",
        "The inputs are far from zero mean and unit scale.",
        "floating inputs with RMS outside {check_loss.INPUT_RMS_RANGE}, or one feature's |mean| + std > "
        "{check_loss.FEATURE_SCALE_MAX} (token ids are not checked).",
        "CS231n, data preprocessing: zero-centre and normalise; unscaled inputs make the initial loss and the usable "
        "learning rate depend on the data's units.",
        "Standardise the inputs with training-set statistics (data.normalize: true, or in your data target).",
    ),
    Code(
        "not-checked",
        ("check-loss", "overfit-small"),
        "info",
        "Something could not be checked, and the finding says what (never a guess).",
        "check-loss: no expected loss is known (the step or the model gives no class logits, or the targets are not class "
        "labels of them), or the weight decay is decoupled (AdamW: it adds no L2 term to the loss, so whether it raises "
        "the objective does not apply; the finding gives the fraction lr x weight_decay it takes off each weight per step "
        "instead); overfit-small: no class logits and targets to judge accuracy by, so the loss alone decides.",
        "nndiag's rule for your own model and batches: where logits are not known, a command says what it could not "
        "check instead of guessing.",
        "Return logits and targets from your step (a mapping {loss, logits, targets}), or give the expected loss "
        "(--expected, expected= in Python).",
    ),
    # -- overfit-small ---------------------------------------------------------------------------
    Code(
        "loss-diverged",
        ("overfit-small",),
        "fail",
        "Training on a tiny subset blew up.",
        "the loss becomes NaN/Inf, or rises above {overfit_small.DIVERGED_FACTOR}x its initial value.",
        "CS231n: a loss above ~3x the initial one means stop early (the learning rate is too high).",
        "Lower optim.lr by 10x (try `nndiag lr-find`), check the init scale, and clip gradients (train.grad_clip).",
    ),
    Code(
        "loss-not-decreasing",
        ("overfit-small",),
        "fail",
        "The model cannot even start to memorise a tiny subset: the loss barely moved.",
        "after --steps (default {defaults.OVERFIT_STEPS}) the best subset loss is still > {overfit_small.NOT_DECREASING}x "
        "the initial. When every weight's gradient was exactly zero at the first step, the LR is ruled out.",
        'CS231n: overfit a small portion of the data; "loss not going down: learning rate too low".',
        "Raise the learning rate (10-1000x, or `nndiag lr-find`) unless the gradients are zero; otherwise look for a bad init "
        "(`nndiag probe`), dead units, frozen parameters or an optimizer not given the model's parameters.",
    ),
    Code(
        "cannot-overfit",
        ("overfit-small",),
        "fail",
        "The loss fell but stalled: the model cannot memorise a tiny subset.",
        "the subset loss fell but not to {defaults.OVERFIT_TARGET}x its initial value, or accuracy stayed below 100%.",
        'CS231n: "with regularization off, you should be able to overfit a small portion of the data: 100% train accuracy, loss near 0".',
        "Give the model more capacity, train longer (--steps), or look for a bug; when the outputs are probabilities, remove "
        "the softmax before cross-entropy.",
    ),
    # -- lr-find ---------------------------------------------------------------------------------
    Code(
        "no-decrease",
        ("lr-find",),
        "fail",
        "No learning rate in the range lowered the loss.",
        "the smoothed drop from the start level is <= {lr_find.NOISE_FACTOR} noise standard deviations, or fewer than "
        "{lr_find.MIN_POINTS} finite points were recorded; candidates mode: no candidate lowered the loss by "
        "{lr_trials.SIGNIFICANT_DROP} of its initial value.",
        "Smith 2015 (the LR range test); on 500 simulated flat curves of pure noise the largest chance drop was 2.8 deviations.",
        "Raise --end, use more --steps or --batches-per-lr; then look for a training bug with `nndiag overfit-small`.",
    ),
    Code(
        "diverged-immediately",
        ("lr-find",),
        "fail",
        "The loss blew up at the very first learning rates.",
        "the divergence point lies in the first {lr_find.EARLY_FRACTION} of the points, or the first loss is NaN/Inf; "
        "candidates mode: every candidate diverged.",
        "Smith 2015; a NaN at the smallest LR points at the data or the loss, not the LR.",
        "Lower --start (e.g. 100x), check the initialisation (`nndiag check-loss`), clip gradients (train.grad_clip).",
    ),
    Code(
        "range-too-narrow",
        ("lr-find",),
        "warn",
        "The best learning rate may lie above the end of the range.",
        "no divergence seen and the minimum lies in the last {lr_find.EDGE_FRACTION} of the points; candidates mode: the best "
        "candidate is the largest tried (and did not diverge), or the smallest while a larger one diverged.",
        "Smith 2015: the range must reach the LR where the loss blows up.",
        "Raise --end (10-100x) until the loss blows up; until then the suggestion is a lower bound.",
    ),
    Code(
        "unreliable-suggestion",
        ("lr-find",),
        "warn (info when the refine stage's trial runs settled the LR)",
        "The range-test curve cannot place the learning rate confidently: its pick is a rough guess, to be settled by trial runs.",
        "reason flat: the smoothed drop is <= {lr_find.NOISE_FACTOR} noise deviations but the loss then rises (after the first "
        "{lr_find.EARLY_FRACTION} of the points); the suggestion is the LR of the rise / {lr_find.DIVERGENCE_MARGIN}. Reason noisy: "
        "the drop is under {lr_find.RELIABLE_DROP} noise deviations. Reason unstable: the suggestions of the curve, its even "
        "points alone and its odd points alone lie more than {lr_find.UNSTABLE_FACTOR}x apart, or a half gives none. Reason trials-flat / "
        "trials-diverged (the refine stage): no trial run lowered the loss, none diverged / some diverged (the suggestion then falls "
        "below them).",
        "Measured on benchmarks/results/lr_find_quality.md (33 problems x 3 seeds, {defaults.LR_FIND_BATCHES_PER_LR} "
        "batches per LR): flat fires on fine-tuning runs whose curve does not drop; the margin was derived on the tuning problems. "
        "After the refine stage 1 of the 18 flagged runs was bad (at 1,000 steps, none at 300), hence info once the trials have "
        "settled the LR.",
        "Keep the refine stage on (--refine-steps > 0; it settles the LR by trial runs), or smooth the curve (--batches-per-lr 8, "
        "a larger batch, more --steps) or compare a few LRs with --candidates; a flat curve on a trained model (fine-tuning) "
        "means: stay near the suggestion. Trials that diverge at a constant LR: add a warm-up (schedule.warmup_steps).",
    ),
    # -- search ----------------------------------------------------------------------------------
    Code(
        "best-on-boundary",
        ("search",),
        "warn",
        "The best trial sits at the edge of the search range: the optimum may lie outside it.",
        "a numeric parameter of the best trial lies within {search.BOUNDARY_FRACTION} of the low or high end of its original "
        "range, in the sampling coordinate (log10 for log parameters).",
        "Google's deep learning tuning playbook: a best trial on the boundary of the search space means widen it.",
        "Widen search.space.<key>.<low|high> (10x for log parameters, half the width otherwise) and search again, unless the "
        "edge is a hard limit.",
    ),
    Code(
        "all-trials-diverged",
        ("search",),
        "fail",
        "No search trial completed: every one diverged or failed.",
        "no trial finished with a finite metric (a trial diverges when its loss goes NaN/Inf or above "
        "{search.ABORT_FACTOR}x its starting loss).",
        "CS231n: 3x the initial loss means stop early.",
        "Lower the top of the optim.lr range (`nndiag lr-find`), check the init (`nndiag check-loss`, `nndiag probe`), clip "
        "gradients; failed trials carry their error in search.csv.",
    ),
    # -- curves (and train, which reads its own curves) ------------------------------------------
    Code(
        "diverged",
        ("curves", "train"),
        "fail",
        "Training blew up.",
        "a logged NaN/Inf; or the run ends on a blow-up (the last loss >= {curves.DIVERGE_FACTOR}x the initial); or >= "
        "{curves.SPIKE_POINTS} points above it; or a validation spike above it that came back; or the smoothed loss climbs "
        "back by {curves.BLOWUP_RETRACE} of its drop and ends {curves.BLOWUP_RATIO}x above its best; train: the Trainer "
        "stopped the run as diverged.",
        "CS231n: a loss above ~3x the initial one means stop early.",
        "Lower the learning rate (10x, or `nndiag lr-find`), check the initialisation scale (`nndiag probe`), clip gradients.",
    ),
    Code(
        "not-generalizing",
        ("curves", "train"),
        "fail",
        "The model learns nothing that generalises: training improves while validation stays at chance.",
        "the train loss ends <= {curves.NOGEN_TRAIN}x its start while the validation loss never falls "
        "{curves.NOGEN_VAL_DROP} below its first value (itself >= {curves.NOGEN_START}x the untrained loss, or ln C when train "
        "knows it), and validation accuracy never rises {curves.NOGEN_VAL_ACC} above its first value (or 1/C) while train "
        "accuracy ends {curves.NOGEN_GAP} above it.",
        "Random labels look exactly like this (Zhang et al. 2017: networks memorise random labels); measured on the real-run "
        "corpus (benchmarks/results/curves_corpus.md).",
        "Check that inputs and labels match (shuffled separately? a wrong column?), that validation uses the same "
        "preprocessing, and that the task is learnable from the inputs.",
    ),
    Code(
        "overfitting",
        ("curves", "train"),
        "warn",
        "The model fits training data at the expense of validation.",
        "the validation loss ends >= {curves.OVERFIT_RISE} above its minimum (and >= {curves.OVERFIT_NOISE}x its noise) while "
        "the train loss rose less than {curves.OVERFIT_TRAIN_SHARE} as much; or a train-val accuracy gap >= {curves.GAP_ACC} "
        "opened; or, without accuracies, train loss <= {curves.GAP_LOSS_RATIO}x the validation loss.",
        "CS231n (the gap between training and validation accuracy); Google's tuning playbook: a validation loss that turns "
        "upward is problematic overfitting.",
        "Increase regularization (optim.weight_decay, dropout), get more data or augment, or stop earlier (train.early_stopping).",
    ),
    Code(
        "underfitting",
        ("curves", "train"),
        "warn",
        "The model does poorly on training and validation alike.",
        "train and validation within {curves.UNDERFIT_CLOSE} of each other (accuracies within {curves.UNDERFIT_CLOSE_ACC}) and "
        "the train loss still >= {curves.UNDERFIT_LEVEL}x its initial value.",
        "CS231n: no gap between train and validation, both poor: increase model capacity.",
        "Train longer, use a bigger model, a higher learning rate, or less regularization.",
    ),
    Code(
        "still-improving",
        ("curves", "train"),
        "info",
        "The loss is still clearly falling at the end: train longer before judging.",
        "a line over the last quarter drops >= {curves.STILL_FRACTION} of the total improvement and >= "
        "{curves.STILL_LEVEL} of the final level, with t >= {curves.STILL_T}.",
        "Google's tuning playbook: still improving at the end means train longer.",
        "Train for more epochs (train.epochs).",
    ),
    Code(
        "plateau",
        ("curves", "train"),
        "warn",
        "The loss never moved, or stalled high.",
        "the drop is < {curves.PLATEAU_MOVE} of the start, or the loss ends >= {curves.PLATEAU_LEVEL}x its start with a flat second half.",
        'CS231n: "loss not going down" (LR too low, bad init, dead units).',
        "Raise or decay the learning rate, try another optimizer or a bigger model, check data and labels; `nndiag probe` for dead units.",
    ),
    Code(
        "noisy",
        ("curves", "train"),
        "warn",
        "The loss curve is too wiggly.",
        "the step-to-step noise is >= {curves.NOISY_RATIO} of the whole drop (>= {curves.NOISY_MIN_POINTS} points).",
        'CS231n: "too wiggly: the batch size may be too small".',
        "Read a moving average; use a larger batch or a lower learning rate.",
    ),
    Code(
        "lr-too-low",
        ("curves", "train"),
        "warn",
        "The loss falls slowly and steadily: the learning rate is probably too low.",
        "ends >= {curves.LOW_LEVEL}x its start, 90% of the fall took more than {curves.LOW_SLOW} of the run, the first 10% of "
        "the run brought at most {curves.LOW_EARLY} of it, the first half fell at most {curves.LOW_LINEARITY}x the second, over "
        "at least {curves.LOW_MIN_STEPS} optimizer steps.",
        "CS231n's loss-curve picture (low learning rate: a slow, almost linear decline); an LR is judged over ~100 iterations.",
        "Raise the learning rate (3-10x, or `nndiag lr-find`).",
    ),
    Code(
        "lr-too-high",
        ("curves", "train"),
        "warn",
        "The loss dropped fast to a high, noisy floor: the learning rate is probably too high.",
        "90% of the fall within {curves.HIGH_FAST} of the run, ending >= {curves.HIGH_FLOOR}x its start with noise >= "
        "{curves.HIGH_NOISE} of that level; or the validation loss swings >= {curves.HIGH_VAL_SWING} around its trend.",
        "CS231n's loss-curve picture (high learning rate: a fast drop to a plateau).",
        "Lower the learning rate (3-10x, or `nndiag lr-find`) or decay it.",
    ),
    Code(
        "bad-init",
        ("curves", "train"),
        "warn",
        "The start of training is wasted: flat, then a sudden drop.",
        "the first 10% of the fall comes only after {curves.BAD_INIT_FLAT} of the run, then 10% to 90% takes at most "
        "{curves.BAD_INIT_SUDDEN}x that wait, for a drop >= {curves.BAD_INIT_DROP} of the start.",
        "CS231n's loss-curve picture (bad initialization: flat, then suddenly dropping).",
        "Check the weight initialisation (Kaiming for ReLU, Xavier for tanh; `nndiag probe`), the input scale, and a warmup "
        "that is too long.",
    ),
    # -- probe -----------------------------------------------------------------------------------
    Code(
        "vanishing-activations",
        ("probe",),
        "fail",
        "Activations collapse towards zero with depth.",
        "std(last activation layer) / std(first) < {probe.VANISH_RATIO}, the per-layer factor < {probe.VANISH_PER_LAYER} and "
        "at least {probe.DEPTH_CONSISTENT} of the layer-to-layer steps shrinking, over >= 3 layers of the model's main "
        "nonlinearity; or an activation layer with std < {probe.VANISH_ABS}. Judged at the weights given (the probe "
        "command), not while training.",
        "The weight-init lecture: 0.01·randn tanh and Xavier+ReLU collapse to zero; Xavier tanh is just right.",
        "Use Xavier (tanh) or Kaiming (ReLU) init (model.args.init), or BatchNorm.",
    ),
    Code(
        "exploding-activations",
        ("probe",),
        "fail",
        "Activations grow with depth.",
        "std(last) / std(first) > {probe.EXPLODE_RATIO}, the per-layer factor > {probe.EXPLODE_PER_LAYER} and at least "
        "{probe.DEPTH_CONSISTENT} of the steps growing; judged at the weights given, not while training.",
        "The weight-init lecture (the mirror of vanishing).",
        "Use a smaller init (proportional to 1/sqrt(fan_in)) or normalisation layers.",
    ),
    Code(
        "saturated-activations",
        ("probe",),
        "fail",
        "tanh/sigmoid units sit at their rails, where their gradient is ~0.",
        "a bounded layer with > {probe.SATURATED_FRACTION} of its outputs at the rails (|tanh| > {probe.TANH_RAIL}; sigmoid < "
        "{probe.SIGMOID_RAIL} or > 1 - that).",
        "The weight-init lecture (0.05·randn tanh saturates); DeepDiagnosis (ICSE 2022): inputs beyond ±5.",
        "Use Xavier init, standardised inputs (data.normalize: true), or ReLU with Kaiming init.",
    ),
    Code(
        "dead-relu",
        ("probe",),
        "warn (fail at >= {probe.DEAD_FAIL_FRACTION} dead)",
        "ReLU units that never fire: they get zero gradient and never recover.",
        "a ReLU-family layer with >= {probe.DEAD_FRACTION} of its units never positive for any probed sample (per unit, not per element).",
        'CS231n: "as much as 40% of your network can be dead" at a too-high LR; DeepDiagnosis\' per-element rule flagged 36 '
        "of 78 healthy models, hence per unit.",
        "Zero biases and Kaiming init, LeakyReLU, or BatchNorm before the ReLU; lower the LR only if units died during training.",
    ),
    Code(
        "vanishing-gradients",
        ("probe",),
        "fail",
        "The early layers barely learn: their gradients are orders of magnitude below the last layer's.",
        "‖g_first‖/‖g_last‖ < {probe.GRAD_VANISH_RATIO} and ‖g_first‖ < {probe.GRAD_VANISH_ABS}, over the first and last "
        "Linear/Conv/Embedding layers in execution order.",
        "AUTOTRAINER (ICSE 2021).",
        "Use an init matched to the activation, ReLU instead of sigmoid/tanh in deep stacks, BatchNorm, or residual connections.",
    ),
    Code(
        "exploding-gradients",
        ("probe",),
        "fail",
        "Gradients grow through depth, or overflow.",
        "‖g_first‖/‖g_last‖ > {probe.GRAD_EXPLODE_RATIO}, or a non-finite gradient norm.",
        "AUTOTRAINER (ICSE 2021); healthy nets at init measured 0.17-6.5, a 10x margin.",
        "Reduce the init scale, add normalisation, clip gradients (train.grad_clip), lower the learning rate.",
    ),
    Code(
        "update-ratio-high",
        ("probe",),
        "warn",
        "One step changes the weights by a large fraction of their norm: the learning rate is probably too high.",
        "median ‖Δw‖/‖w‖ of the weight matrices after the last probed step > {probe.UPDATE_HIGH}, or the probed steps "
        "diverged (the loss rose above 3x).",
        "CS231n: an update/weight ratio of about {probe.UPDATE_HEALTHY} is healthy; two orders of magnitude away is flagged.",
        "Lower optim.lr (or run `nndiag lr-find`); no LR advice when a structural finding explains it.",
    ),
    Code(
        "update-ratio-low",
        ("probe",),
        "warn",
        "One step barely changes the weights: the learning rate is probably too low.",
        "median ‖Δw‖/‖w‖ < {probe.UPDATE_LOW}; while training, not at steps where the schedule holds the LR below "
        "{probe.UPDATE_LR_CUT} of its peak (warmup, the end of a decay).",
        "CS231n: an update/weight ratio of about {probe.UPDATE_HEALTHY} is healthy.",
        "Raise optim.lr (or run `nndiag lr-find`), check for frozen parameters; when the gradients are exactly zero the LR "
        "is ruled out (dead units, a cut graph).",
    ),
    Code(
        "non-finite",
        ("probe",),
        "fail",
        "NaN or Inf in an activation, a gradient, a weight or the loss.",
        "any NaN/Inf activation, gradient or weight (also weights that blow up during the probed steps), or a NaN loss.",
        "NaN propagates: the first layer that shows it is where to look.",
        "Look at the first layer named: NaN inputs, a weight already NaN, an exploding init; during the probed steps, lower "
        "optim.lr and clip gradients.",
    ),
]

REGISTRY: dict[str, Code] = {entry.code: entry for entry in ENTRIES}


def codes_by_command() -> dict[str, tuple[str, ...]]:
    """command -> its codes, in registry order (train's curves codes listed under curves)."""
    out: dict[str, list[str]] = {}
    for entry in ENTRIES:
        for command in entry.commands:
            if command != "train":
                out.setdefault(command, []).append(entry.code)
    return {command: tuple(codes) for command, codes in out.items()}


def severities(code: str) -> tuple[str, ...]:
    """The severities a code may have (dead-relu: warn, and fail past its second threshold)."""
    text = REGISTRY[code].severity
    return tuple(s for s in SEVERITIES if re.search(rf"\b{s}\b", text))


# --------------------------------------------------------------------------------------------
# Thresholds: the current values of the module constants a rule names
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _constants(module: str) -> dict[str, object]:
    """NAME = <number or tuple> assignments at the top of a module, evaluated without importing it."""
    path = Path(__file__).resolve().parent / MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = _evaluate(node.value, values)
            except ValueError:
                continue
    return values


def _evaluate(node: ast.AST, known: dict[str, object]) -> object:
    """Numbers, tuples of numbers, + - * / of them, and names defined above or imported thresholds."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, known) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, known)  # type: ignore[operator]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _evaluate(node.left, known), _evaluate(node.right, known)
        ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b, ast.Div: lambda: a / b}  # type: ignore[operator]
        return ops[type(node.op)]()
    if isinstance(node, ast.Name):
        if node.id in known:
            return known[node.id]
        if node.id == "DIVERGENCE_FACTOR":  # the one shared threshold, imported from nndiag.findings
            return _constants("findings")["DIVERGENCE_FACTOR"]
    raise ValueError("not a threshold")


def constant(module: str, name: str) -> object:
    values = _constants(module)
    if name not in values:
        raise KeyError(f"{module}.{name} is not a constant of nndiag/{MODULES[module]}")
    return values[name]


def thresholds(code: str) -> dict[str, object]:
    """{module.CONSTANT: current value} for every threshold a code's texts name."""
    entry = REGISTRY[code]
    names = PLACEHOLDER.findall(" ".join((entry.severity, entry.rule, entry.source)))
    return {f"{m}.{n}": constant(m, n) for m, n in names}


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def nearest(code: str, n: int = 3) -> list[str]:
    """The registered codes closest to a misspelt one."""
    import difflib

    return difflib.get_close_matches(code, list(REGISTRY), n=n, cutoff=0.4)

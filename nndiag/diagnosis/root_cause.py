"""Root causes: which fault, among everything babysit saw, most likely explains the rest.

Babysit gathers findings from up to seven steps. Many of them are symptoms of one fault: a net whose
ReLUs are all dead at initialisation shows a loss that does not move (overfit-small), a constant
layer and updates of exactly zero (probe). Reading the findings one at a time gives advice that points
the wrong way ("raise the learning rate"). `rank` reads them together and names the cause.

The reasoning is one table, `RULES`, in precedence order (most fundamental first). Each rule is a
cause with
  established_by  the findings that show the cause directly (a code, optionally only at a minimum
                  severity, or only when an evidence key is true (`when`) or false/absent (`unless`));
  explains        the codes of the other findings it accounts for ("*": all of them);
  fix             what to do about it.

`rank` walks the table once, from the top:
  1. a rule whose establishing findings are all already explained by an earlier cause is a
     consequence, not a root cause: whatever it would explain goes to that earlier cause too
     (saturated tanh explains a huge initial loss, which explains a divergence);
  2. otherwise the rule is a root cause: it owns its establishing findings and every finding not
     yet explained whose code it explains.
So a learning-rate cause, near the bottom, explains only what no structural cause (dead, vanishing,
saturated or exploding layers, a bad output scale, a softmax before the loss) already explains.
Root causes are then ordered: those whose findings include a failing one first, then by precedence.
`info` findings never count.

Pure: plain finding dicts in (`code`, `severity`, `evidence`, and optionally `step`, `message`),
RootCause objects out. No torch; babysit, its report and its JSON all use the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from nndiag.findings import ALL_CODES, CODES, addressed, lr_move

SEVERITY_ORDER = {"info": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Sign:
    """A finding that establishes a cause: its code, a minimum severity, and evidence keys that must be
    true (`when`) or false/absent (`unless`)."""

    code: str
    severity: str = "warn"
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()

    def matches(self, finding: dict[str, Any]) -> bool:
        evidence = finding.get("evidence") or {}
        return (
            finding.get("code") == self.code
            and SEVERITY_ORDER.get(str(finding.get("severity")), 0) >= SEVERITY_ORDER[self.severity]
            and all(evidence.get(key) for key in self.when)
            and not any(evidence.get(key) for key in self.unless)
        )

    def __str__(self) -> str:
        text = self.code + (" (fail)" if self.severity == "fail" else "")
        text += "".join(f" with {key}" for key in self.when)
        return text + "".join(f" without {key}" for key in self.unless)


@dataclass(frozen=True)
class Rule:
    cause: str  # stable id, in babysit's JSON (`root_causes[].cause`)
    title: str  # the cause in a few words
    established_by: tuple[Sign, ...]
    explains: tuple[str, ...]  # finding codes it accounts for; "*" = every finding
    fix: str  # what to do; "{lower}" / "{raise}": how far to move the LR (nndiag.findings.lr_move), as its evidence measured

    def fix_text(self, factor: float | None = None) -> str:
        """The fix, with the LR factor a finding measured (`lr_factor` in its evidence) or, without one, lr-find's."""
        for direction in ("lower", "raise"):
            move = lr_move(direction, factor)
            self_fix = self.fix.replace("{" + direction + "}", move[0].upper() + move[1:])
            if self_fix != self.fix:
                return self_fix
        return self.fix

    def established(self, finding: dict[str, Any]) -> bool:
        return any(sign.matches(finding) for sign in self.established_by)

    def explains_code(self, code: str) -> bool:
        return "*" in self.explains or code in self.explains


def _signs(*items: str | Sign) -> tuple[Sign, ...]:
    return tuple(Sign(item) if isinstance(item, str) else item for item in items)


# Symptom groups, by what the loss does.
NOT_MOVING = ("loss-not-decreasing", "no-decrease", "plateau", "underfitting", "lr-too-low", "bad-init", "update-ratio-low")
DIVERGING = ("loss-diverged", "diverged-immediately", "all-trials-diverged", "diverged", "update-ratio-high", "non-finite")
LR_SHAPED = ("lr-too-high", "lr-too-low", "noisy", "plateau", "underfitting", "bad-init", "still-improving")  # what the loss's shape says
VALIDATION = ("overfitting", "not-generalizing", "accuracy-at-baseline", "underfitting")  # what train-vs-validation says

# The table, most fundamental cause first. Sources for the links: the CS231n notes (Neural Networks Part 3, babysitting the learning process)
# (dead units, vanishing/saturated activations, "loss not going down: LR too low", "loss exploding:
# LR too high", initial loss ln C) and each finding's own rule (README, per command).
RULES: tuple[Rule, ...] = (
    Rule(
        "non-finite-data",
        "NaN/Inf values in the training data",
        _signs("non-finite-data"),
        ("*",),
        "Drop or impute the rows check-data names (a failed parse, a division by zero in preprocessing, a missing value "
        "read as NaN): one NaN input makes the loss NaN, whatever the learning rate.",
    ),
    Rule(
        "non-finite-values",
        "NaN/Inf values already at initialisation",
        _signs("non-finite-loss", Sign("non-finite", when=("at_init",)), Sign("loss-diverged", when=("at_init",))),
        ("*",),
        "NaN/Inf at initialisation poisons every step after it. Look for NaN/Inf in the inputs (the data), a log or division "
        "of zero in the model or the loss, an init that overflows, and targets that are not valid class indices.",
    ),
    # -- the data (check-data): faults in what the model is given come first ------------------------
    Rule(
        "labels-out-of-range",
        "class labels outside the model's outputs",
        _signs("labels-out-of-range"),
        ("*",),
        "Remap the class labels to 0..C-1 (y - 1 when they start at 1), or give the model as many outputs as there are classes.",
    ),
    Rule(
        "constant-inputs",
        "inputs that barely change: nearly every feature is constant",
        _signs(Sign("constant-features", severity="warn")),
        (
            *LR_SHAPED,
            *VALIDATION,
            "loss-not-decreasing",
            "no-decrease",
            "cannot-overfit",
            "labels-look-random",
            "few-distinct-examples",
            "train-val-overlap",
            "vanishing-gradients",
            "update-ratio-low",
            "dead-relu",
        ),
        "Look for the preprocessing step that zeroes or overwrites the inputs (a wrong column, a mask applied twice): the model "
        "has nothing to learn from.",
    ),
    Rule(
        "labels-look-random",
        "labels that do not follow their inputs (shuffled apart from them?)",
        _signs("labels-look-random"),
        (*LR_SHAPED, *VALIDATION, "loss-not-decreasing", "no-decrease", "cannot-overfit", "update-ratio-low", "update-ratio-high"),
        "Check that inputs and labels stay paired: shuffled separately, sorted apart, read from different files or columns. "
        "No model or learning rate learns labels that do not depend on the inputs.",
    ),
    Rule(
        "few-distinct-examples",
        "a dataset that repeats a few examples over and over",
        _signs("few-distinct-examples"),
        ("overfitting", "not-generalizing", "still-improving", "noisy", "accuracy-at-baseline"),
        "Fix the Dataset's __getitem__ (an index that is ignored, taken modulo a small number, or a cache), its length and the sampler.",
    ),
    Rule(
        "unshuffled-batches",
        "a DataLoader that yields one class at a time (not shuffled)",
        _signs("unshuffled-batches"),
        (*LR_SHAPED, *VALIDATION, *DIVERGING, "loss-not-decreasing", "no-decrease", "cannot-overfit"),
        "Shuffle the training DataLoader (shuffle=True or a RandomSampler): batches of one class pull the model from class to class.",
    ),
    Rule(
        "train-val-overlap",
        "validation examples that are also training examples",
        _signs("train-val-overlap"),
        (),
        "De-duplicate across the split and validate on examples the model never trained on: the validation numbers measure memory.",
    ),
    # -- the model's wiring (check-loss's structure checks) -------------------------------------
    Rule(
        "loss-broadcasts",
        "a loss that broadcasts outputs against targets of another shape",
        _signs("loss-broadcasts"),
        (
            *LR_SHAPED,
            *VALIDATION,
            "loss-not-decreasing",
            "no-decrease",
            "cannot-overfit",
            "initial-loss-high",
            "initial-loss-low",
            "update-ratio-low",
        ),
        "Make the outputs and targets the same shape before the loss (outputs.squeeze(-1) for (B, 1) outputs against (B,) targets).",
    ),
    Rule(
        "nothing-trains",
        "parameters that cannot learn: frozen, cut off the graph, or left out of the optimizer",
        _signs(Sign("frozen-parameters", severity="warn"), "no-gradient", "not-in-optimizer"),
        (*NOT_MOVING, "cannot-overfit", *VALIDATION, "vanishing-gradients", "update-ratio-low", "noisy"),
        "Make every parameter that should learn trainable and reachable: requires_grad=True, no .detach() / torch.no_grad() / "
        ".data on the way to the loss, and an optimizer made over model.parameters() once the model is complete.",
    ),
    Rule(
        "softmax-before-loss",
        "a softmax (or another activation) in front of a loss that expects logits",
        _signs(Sign("cannot-overfit", when=("outputs_are_probabilities",)), "outputs-bounded"),
        ("cannot-overfit", *NOT_MOVING, *VALIDATION, "initial-loss-high", "initial-loss-low"),
        "Remove the activation at the end of the model: cross_entropy applies log-softmax itself and expects raw logits.",
    ),
    Rule(
        "symmetric-units",
        "hidden units that start identical (a zero or constant init) and stay so",
        _signs("symmetric-units"),
        (*NOT_MOVING, "cannot-overfit", *VALIDATION, "vanishing-activations", "dead-relu"),
        "Initialise the hidden layers randomly (Kaiming for ReLU, Xavier for tanh; PyTorch's default does); only the last layer may start at zero.",
    ),
    Rule(
        "eval-randomness",
        "randomness (dropout) left on at evaluation",
        _signs("eval-not-deterministic"),
        ("eval-train-mismatch", "lr-too-high", "noisy", *VALIDATION),
        "Use nn.Dropout (or F.dropout(..., training=self.training)) so model.eval() turns it off; validation then measures the model.",
    ),
    Rule(
        "batch-dependence",
        "outputs that depend on the other examples in the batch",
        _signs("batch-dependence"),
        ("eval-train-mismatch", "lr-too-high", "noisy", *VALIDATION),
        "Find the layer that mixes examples (statistics over dim 0 at evaluation, a swapped batch/sequence axis: batch_first) and fix it.",
    ),
    Rule(
        "eval-statistics",
        "running statistics (BatchNorm) that do not follow training",
        _signs("eval-train-mismatch"),
        ("lr-too-high", "noisy", *VALIDATION),
        "Check the BatchNorm layers: momentum=0, track_running_stats changed, or buffers overwritten; eval mode then uses statistics "
        "of another model.",
    ),
    Rule(
        "loss-sums",
        "a loss summed over the batch instead of averaged",
        _signs("loss-scales-with-batch"),
        ("initial-loss-high", *DIVERGING, "lr-too-high", "noisy", "cannot-overfit"),
        "Use reduction='mean' (or divide by the batch size): a summed loss is B times too large and ties the usable LR to the batch size.",
    ),
    # -- the optimizer's settings ---------------------------------------------------------------
    Rule(
        "regularization-dominates",
        "weight decay that overwhelms the data loss",
        _signs("regularization-dominates"),
        (*LR_SHAPED, *VALIDATION, "loss-not-decreasing", "update-ratio-low", "update-ratio-high"),
        "Lower the weight decay (1e-5 to 1e-3 are usual for L2; AdamW's weight_decay 0.01-0.1 at a small LR), so that it no longer "
        "outweighs the data's gradient.",
    ),
    Rule(
        "clipping-too-tight",
        "gradient clipping far below the gradient norm, on every step",
        _signs("clipping-always-active"),
        (*LR_SHAPED, *VALIDATION, "loss-not-decreasing", "update-ratio-low", "cannot-overfit"),
        "Raise the clipping threshold to about the usual gradient norm (the median in the finding), or remove it.",
    ),
    Rule(
        "inputs-not-normalized",
        "inputs far from zero mean and unit scale",
        _signs("inputs-not-normalized"),
        ("initial-loss-high", "saturated-activations", "exploding-activations", "exploding-gradients", *DIVERGING),
        "Standardise the inputs with training-set statistics (data.normalize: true, or in your data target); the usable "
        "learning rate and the initial loss then no longer depend on the data's units.",
    ),
    Rule(
        "dead-units",
        "ReLU units dead (never positive) at initialisation",
        _signs(Sign("dead-relu", severity="fail", unless=("trained",))),  # dead after optimizer steps: units-died-in-training
        (*NOT_MOVING, "cannot-overfit", "vanishing-activations", "vanishing-gradients"),
        "Dead units pass no signal and get exactly zero gradient, so no learning rate can revive them. Find what pushes the "
        "pre-activations negative (a large negative bias, a bad init): use Kaiming init with zero biases, LeakyReLU, or "
        "BatchNorm before the ReLU.",
    ),
    Rule(
        "vanishing-activations",
        "activations that vanish with depth (init too small)",
        _signs("vanishing-activations"),
        (*NOT_MOVING, "cannot-overfit", "vanishing-gradients", "update-ratio-high"),
        "The init is too small for this depth: use Xavier (tanh) or Kaiming (ReLU) init (model.args.init), or add BatchNorm. "
        "Changing the learning rate does not fix a signal that vanishes with depth (tiny weights also make every update "
        "look large relative to them).",
    ),
    Rule(
        "saturated-activations",
        "tanh/sigmoid units saturated at their rails (init or inputs too large)",
        _signs("saturated-activations"),
        (*NOT_MOVING, "cannot-overfit", "vanishing-gradients", "exploding-gradients", "initial-loss-high"),
        "Saturated units have local gradient ~0. Use Xavier init (std 1/sqrt(fan_in)), standardise the inputs, or switch to "
        "ReLU with Kaiming init.",
    ),
    Rule(
        "vanishing-gradients",
        "gradients that vanish before the first layers",
        _signs("vanishing-gradients"),
        (*NOT_MOVING, "cannot-overfit"),
        "Use an init matched to the activation, ReLU instead of sigmoid/tanh in deep stacks, BatchNorm or residual connections.",
    ),
    Rule(
        "init-too-large",
        "activations or gradients that grow with depth (init too large)",
        _signs("exploding-activations", "exploding-gradients"),
        ("initial-loss-high", "cannot-overfit", "no-decrease", *DIVERGING),
        "Scale the init down (Kaiming for ReLU, Xavier for tanh: std proportional to 1/sqrt(fan_in)), add BatchNorm/LayerNorm, "
        "and clip gradients (train.grad_clip).",
    ),
    Rule(
        "output-too-large",
        "a huge initial loss: the output layer starts far too large",
        _signs(Sign("initial-loss-high", unless=("eval_mode",))),  # in eval mode it is the mode's loss (loop-eval-mode)
        ("cannot-overfit", "no-decrease", *DIVERGING),
        "The untrained model is confidently wrong, so the first gradients are huge. Scale the last layer's initial weights "
        "down (e.g. x0.01, or zeros), and use Xavier/Kaiming init.",
    ),
    Rule(
        "not-a-fresh-model",
        "an initial loss below chance: a label leak or a model that is not fresh",
        _signs(Sign("initial-loss-low", unless=("eval_mode",))),
        (),
        "Check that the model is freshly initialised, that the labels do not leak into the inputs, and that the loss is the "
        "one the recipe names.",
    ),
    # -- issue 19: causes a training loop shows directly (nndiag.watch and the callbacks), and the LR schedule; ranked
    # above every cause inferred from how the loss moves ---------------------------------------------------------------
    Rule(
        "loop-no-optimizer-step",
        "the training loop never calls optimizer.step()",
        _signs("no-optimizer-step"),
        (*NOT_MOVING, "cannot-overfit", "weights-unchanged"),
        "Call optimizer.step() after loss.backward() in every iteration, on the optimizer that holds the model's parameters.",
    ),
    Rule(
        "loop-no-gradient",
        "no gradient reaches the parameters (a loss without a graph, or gradients cleared before the step)",
        _signs("no-gradient-at-step"),
        (*NOT_MOVING, "cannot-overfit", "weights-unchanged"),
        "Compute the loss from the model's output with gradients on (not under torch.no_grad(), not from .detach() or .item()), "
        "and call zero_grad() before loss.backward(), never between backward() and step().",
    ),
    Rule(
        "loop-weights-unchanged",
        "optimizer steps that do not move the model (an optimizer over other parameters, or an LR of 0)",
        _signs("weights-unchanged"),
        (*NOT_MOVING, "cannot-overfit"),
        "Build the optimizer over this model's parameters, after the model is built and moved, with an LR above 0.",
    ),
    Rule(
        "loop-grads-accumulate",
        "gradients never zeroed: each step applies the sum of every batch gradient so far",
        _signs("grads-accumulate"),
        (*DIVERGING, "noisy", "lr-too-high", "plateau", "underfitting", "dead-relu", "exploding-gradients"),
        "Call optimizer.zero_grad() once per optimizer step, before loss.backward() (after every k-th step to accumulate on purpose).",
    ),
    Rule(
        "loop-eval-mode",
        "the model trained in eval mode (dropout off, BatchNorm on running statistics it never updates)",
        _signs("eval-mode-training"),
        ("overfitting", "underfitting", "plateau", "noisy", *DIVERGING, "initial-loss-high", "initial-loss-low"),
        "Call model.train() before the training steps, and again after every validation pass.",
    ),
    Rule(
        "loop-same-batch",
        "the loop trains on one batch over and over",
        _signs("same-batch-repeated"),
        ("overfitting", "not-generalizing"),
        "Draw a new batch every iteration (for x, y in loader), not one batch before the loop.",
    ),
    Rule(
        "schedule-collapses",
        "an LR schedule that reaches ~0 early (sized in epochs, stepped every batch)",
        _signs("lr-schedule-collapses"),
        ("plateau", "lr-too-low", "underfitting", "update-ratio-low", "noisy"),
        "Step the scheduler once per epoch, or size it in optimizer steps (T_max, step_size, milestones in steps).",
    ),
    Rule(
        "units-died-in-training",
        "ReLU units that died during training (most often a learning rate too high)",
        _signs(Sign("dead-relu", severity="fail", when=("trained",))),
        (*NOT_MOVING, "cannot-overfit", "vanishing-activations", "vanishing-gradients"),
        "Units that die during training were knocked out by steps too large: lower optim.lr (`nndiag lr-find` measures how far), clip "
        "gradients (train.grad_clip), or use LeakyReLU; dead units never recover, so retrain from the start.",
    ),
    # -- end of issue 19's rules ----------------------------------------------------------------------------------------
    Rule(
        "zero-gradients",
        "weights whose gradient is exactly zero",
        _signs(Sign("loss-not-decreasing", when=("zero_gradients",)), Sign("update-ratio-low", when=("zero_gradients",))),
        (*NOT_MOVING, "cannot-overfit"),
        "No learning rate moves a weight whose gradient is exactly zero. Look for ReLUs dead from the start (`nndiag probe`), "
        "a graph cut by .detach(), torch.no_grad() or .data, or a loss that does not depend on the model's outputs.",
    ),
    Rule(
        "majority-class",
        "a model that only learned the class frequencies of imbalanced data",
        _signs(Sign("accuracy-at-baseline", when=("imbalanced",))),
        (*LR_SHAPED, *VALIDATION, "loss-not-decreasing"),
        "Weight the loss by class (CrossEntropyLoss(weight=...)) or resample the minority classes, and judge balanced accuracy or "
        "per-class recall: the accuracy alone only shows the majority class's share.",
    ),
    Rule(
        "lr-too-high",
        "a learning rate far too high",
        _signs(
            "loss-diverged",
            "diverged",
            "lr-too-high",
            "all-trials-diverged",
            "non-finite",
            Sign("update-ratio-high", unless=("consequence",)),
        ),
        (*DIVERGING, "lr-too-high", "noisy"),
        "{lower}; clip gradients (train.grad_clip) if spikes persist.",
    ),
    Rule(
        "lr-too-low",
        "a learning rate far too low",
        _signs(
            Sign("loss-not-decreasing", unless=("zero_gradients",)),
            "lr-too-low",
            Sign("update-ratio-low", unless=("zero_gradients", "weights_stalled", "consequence")),
        ),
        ("loss-not-decreasing", "update-ratio-low", "lr-too-low", "plateau", "underfitting"),
        "{raise}.",
    ),
    Rule(
        "too-little-capacity",
        "a model that cannot memorise a tiny sample (capacity, or a bug)",
        _signs(Sign("cannot-overfit", unless=("outputs_are_probabilities",))),
        ("underfitting", "plateau"),
        "Give the model more capacity (wider/deeper layers, a nonlinearity), train longer, or look for a bug in the model, "
        "the loss or the labels.",
    ),
)

# The causes only the probe can establish (babysit runs the probe when a finding might be theirs).
PROBE_CAUSES = tuple(r for r in RULES if all(s.code in CODES["probe"] for s in r.established_by))


@dataclass
class RootCause:
    cause: str
    title: str
    fix: str
    severity: str  # the worst severity among its evidence and what it explains
    evidence: list[int] = field(default_factory=list)  # indices of the findings that establish it
    explained: list[int] = field(default_factory=list)  # indices of the other findings it accounts for
    precedence: int = 0  # its row in RULES

    def to_dict(self, findings: list[dict[str, Any]]) -> dict[str, Any]:
        def brief(i: int) -> dict[str, Any]:
            f = findings[i]
            return {"step": f.get("step"), "code": f.get("code"), "severity": f.get("severity"), "message": f.get("message", "")}

        return {
            "cause": self.cause,
            "title": self.title,
            "severity": self.severity,
            "fix": self.fix,
            "evidence": [brief(i) for i in self.evidence],
            "explains": [brief(i) for i in self.explained],
        }


def counted(finding: dict[str, Any]) -> bool:
    return SEVERITY_ORDER.get(str(finding.get("severity")), 0) >= SEVERITY_ORDER["warn"]


def rank(findings: list[dict[str, Any]], audience: str = "recipe") -> list[RootCause]:
    """The root causes behind `findings`, most likely first, each fix in the words of `audience` (recipe keys, or
    the arguments of a Python user's own code: nndiag.findings.addressed). Pure."""
    owner: dict[int, RootCause] = {}
    causes: list[RootCause] = []
    live = [i for i, f in enumerate(findings) if counted(f)]
    for precedence, rule in enumerate(RULES):
        establishing = [i for i in live if rule.established(findings[i])]
        if not establishing:
            continue
        fresh = [i for i in establishing if i not in owner]
        if fresh:
            target = RootCause(rule.cause, rule.title, rule.fix, "warn", precedence=precedence)
            causes.append(target)
            for i in fresh:
                owner[i] = target
                target.evidence.append(i)
        else:
            target = owner[establishing[0]]  # a consequence of an earlier cause: it inherits what this one explains
        for i in live:
            if i not in owner and rule.explains_code(str(findings[i].get("code"))):
                owner[i] = target
                target.explained.append(i)
    for cause in causes:
        owned = sorted(cause.evidence + cause.explained)
        severities = {findings[i].get("severity") for i in owned}
        cause.severity = "fail" if "fail" in severities else "warn"
        cause.explained.sort()
        measured = [float(f) for i in owned if isinstance(f := (findings[i].get("evidence") or {}).get("lr_factor"), (int, float))]
        cause.fix = addressed(RULES[cause.precedence].fix_text(measured[0] if measured else None), audience)
    return sorted(causes, key=lambda c: (c.severity != "fail", c.precedence))


def explained_by(findings: list[dict[str, Any]], causes: list[RootCause]) -> list[str | None]:
    """Per finding: the id of the root cause it is a consequence of (None for evidence and for the rest)."""
    out: list[str | None] = [None] * len(findings)
    for cause in causes:
        for i in cause.explained:
            out[i] = cause.cause
    return out


def cause_of(findings: list[dict[str, Any]], causes: list[RootCause]) -> list[tuple[int, str] | None]:
    """Per finding: (1-based rank of its root cause, "evidence" | "explained"), or None."""
    out: list[tuple[int, str] | None] = [None] * len(findings)
    for number, cause in enumerate(causes, 1):
        for i in cause.evidence:
            out[i] = (number, "evidence")
        for i in cause.explained:
            out[i] = (number, "explained")
    return out


def probe_could_explain(findings: Iterable[dict[str, Any]]) -> bool:
    """True when a warn/fail finding is one that a cause only the probe can establish would explain."""
    return any(counted(f) and any(rule.explains_code(str(f.get("code"))) for rule in PROBE_CAUSES) for f in findings)


def _check_table() -> None:
    for rule in RULES:
        for code in [s.code for s in rule.established_by] + [c for c in rule.explains if c != "*"]:
            if code not in ALL_CODES:
                raise ValueError(f"root_cause.RULES[{rule.cause!r}] names unknown finding code {code!r}")


_check_table()

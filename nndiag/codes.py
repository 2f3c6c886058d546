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
    "check_data": "diagnostics/check_data.py",
    "structure": "diagnostics/structure.py",
    "train": "diagnostics/train.py",
    "loop": "diagnostics/loop.py",  # issue 19: nndiag.watch's loop checks
}

ENTRIES = [
    # -- check-data ------------------------------------------------------------------------------
    Code(
        "non-finite-data",
        ("check-data",),
        "fail",
        "NaN or Inf values in the training inputs or targets.",
        "any training example (of up to {check_data.SAMPLE_EXAMPLES} examined) has a NaN/Inf input or target value; the finding "
        "says how many and the first example indices.",
        "A NaN input makes the loss NaN whatever the learning rate; Humbatova et al. (ICSE 2020) put data faults first among real faults.",
        "Drop or impute the rows named (a failed parse, a division by zero in preprocessing, a missing value read as NaN).",
    ),
    Code(
        "labels-out-of-range",
        ("check-data",),
        "fail",
        "Class labels that the model's outputs cannot score: outside [0, C).",
        "integer class targets outside [0, C), C the size of the model's logits' class axis (-100 ignored); every command "
        "stops with this finding before it runs when the labels cannot be scored (PyTorch's loss would raise IndexError).",
        "PyTorch's cross-entropy takes class indices 0..C-1; labels 1..C with C outputs is the classic off-by-one.",
        "Remap the labels to 0..C-1 (y - 1 when they start at 1), or give the model as many outputs as there are classes.",
    ),
    Code(
        "missing-classes",
        ("check-data",),
        "warn",
        "A class of the model's outputs never appears among the training labels.",
        "some class in 0..C-1 has no training example while every other class has at least {check_data.MISSING_MIN_COUNT}.",
        "Labels that start at 1 leave class 0 empty; a filter can drop a class.",
        "Check the label mapping and any filtering of the data.",
    ),
    Code(
        "class-imbalance",
        ("check-data",),
        "info",
        "One class dominates: the majority baseline is the accuracy of always predicting it.",
        "the majority class holds >= {check_data.IMBALANCE_SHARE} of the training labels; its share is the baseline that later "
        "steps judge accuracy against (accuracy-at-baseline).",
        "SageMaker Debugger's ClassImbalance rule; an accuracy at the baseline means the model learned only the class frequencies.",
        "Judge accuracy against the baseline (or balanced accuracy); weight the loss by class or resample when the model only "
        "predicts the majority.",
    ),
    Code(
        "train-val-overlap",
        ("check-data",),
        "warn",
        "Validation examples that are also in the training data: validation measures memory.",
        "at least {check_data.OVERLAP_SHARE} of the validation examples have an exact duplicate (hashed inputs) in the training data.",
        "A leak from training into validation inflates every validation number (Google's tuning playbook: validate on held-out data).",
        "Split before augmenting or duplicating, and de-duplicate across the split.",
    ),
    Code(
        "few-distinct-examples",
        ("check-data",),
        "warn (fail below {check_data.DISTINCT_FAIL} distinct)",
        "One pass over the training data yields far fewer distinct examples than its length says.",
        "distinct (hashed) examples below {check_data.DISTINCT_SHARE} of the examples (or of the distinct examples the values "
        "allow, when fewer: the product of each feature's distinct values; 3 binary features allow 8) over up to "
        "{check_data.SAMPLE_EXAMPLES} examples.",
        "A Dataset whose __getitem__ ignores its index (or takes it modulo a small number) repeats a few items.",
        "Check the Dataset's __getitem__, its length, any cache and the sampler.",
    ),
    Code(
        "unshuffled-batches",
        ("check-data",),
        "warn",
        "The user's DataLoader yields batches of few classes: the data comes sorted by class.",
        "the loader's first {check_data.LOADER_BATCHES} batches hold a median of at most {check_data.DIVERSITY_SHARE} of the "
        "classes a shuffled batch of their size would hold (when that is >= {check_data.MIN_EXPECTED_CLASSES}).",
        "Batches of one or two classes pull the model from class to class: measured with SGD + momentum on the digits, 17% "
        "test accuracy sorted against 96% shuffled (benchmarks/bug_corpus.py).",
        "Shuffle the training DataLoader (shuffle=True, or a RandomSampler).",
    ),
    Code(
        "constant-features",
        ("check-data",),
        "info (warn when >= {check_data.CONSTANT_WARN} of the features are constant)",
        "Input features that never change.",
        "features (of the flattened floating inputs) with zero standard deviation over the examined examples.",
        "Constant features carry no information; a few are normal (an image's border), nearly all point at a preprocessing bug.",
        "Look for inputs zeroed or overwritten in preprocessing, or a wrong column.",
    ),
    Code(
        "inputs-not-normalized",
        ("check-data",),
        "warn",
        "The inputs are far from zero mean and unit scale.",
        "floating inputs with RMS outside {check_data.INPUT_RMS_RANGE} (a small RMS is not flagged for sparse inputs, at least "
        "{check_data.SPARSE_SHARE} exact zeros), or one feature's |mean| + std > "
        "{check_data.FEATURE_SCALE_MAX} (token ids are not checked).",
        "CS231n, data preprocessing: zero-centre and normalise; unscaled inputs make the initial loss and the usable "
        "learning rate depend on the data's units.",
        "Standardise the inputs with training-set statistics (data.normalize: true, or in your data target).",
    ),
    Code(
        "labels-look-random",
        ("check-data",),
        "warn",
        "The labels do not depend on the inputs: they look shuffled apart from them.",
        "floating inputs, class labels, >= {check_data.KNN_MIN_EXAMPLES} examples: the leave-one-out 1-nearest-neighbour "
        "accuracy on up to {check_data.KNN_EXAMPLES} standardised training examples is within {check_data.KNN_SIGMAS} standard "
        "errors of the same accuracy with the labels permuted.",
        "TheDeepChecker (TOSEM 2022) tests whether training depends on the data; measured here: digits 97% against 9% permuted, "
        "MNIST-1D 52% against 11%, digits with shuffled labels 10% against 10%.",
        "Check that inputs and labels stay paired (shuffled separately, sorted apart, read from different files); ignore it for a "
        "task no raw-input distance can solve.",
    ),
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
        "fail (info when the model already predicts the labels)",
        "The untrained model already beats chance: its weights are trained, or the loss measures something else.",
        "mean loss at initialisation < expected / (1 + tolerance); --tolerance {defaults.CHECK_LOSS_TOLERANCE}. Info when the "
        "accuracy at init covers >= {check_loss.TRAINED_SHARE} of the way from chance to 100% (10 classes: 46%, 2 classes: 70%; "
        "trained weights: fine-tuning, a checkpoint); fail otherwise.",
        "CS231n: the initial loss of an untrained softmax classifier is ln C; a random model cannot exploit a label leak before "
        "it trains, so a low loss with high accuracy means trained weights.",
        "Fine-tuning or resuming: nothing to do. Otherwise check that the model is fresh and that the loss compares the "
        "outputs with the targets.",
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
    Code(
        "frozen-parameters",
        ("check-loss",),
        "info (warn under {structure.TRAINABLE_WARN} trainable, fail when nothing trains)",
        "Parameters with requires_grad=False.",
        "parameter tensors with requires_grad=False, named; warn when under {structure.TRAINABLE_WARN} of the values train, fail "
        "when none does.",
        "Nothing learns where requires_grad is False; freezing a pretrained backbone is deliberate, freezing a model from "
        "scratch is a bug.",
        "Set requires_grad=True on what should train, before making the optimizer (ignore when a backbone is frozen on purpose).",
    ),
    Code(
        "no-gradient",
        ("check-loss",),
        "warn (fail over {structure.NO_GRADIENT_FAIL} of the trainable values, or a loss without gradient)",
        "Trainable parameters that get no gradient: the graph is cut, or a layer is unused.",
        "after one backward pass on a training batch, trainable parameters whose .grad is None while others have one; or a loss "
        "that does not require grad at all.",
        "A .detach(), torch.no_grad() or .data in forward cuts everything before it off the loss (TheDeepChecker's pre-checks).",
        "Remove the cut (or the unused layer); the parameters named never change.",
    ),
    Code(
        "not-in-optimizer",
        ("check-loss",),
        "warn (fail over {structure.NOT_IN_OPTIMIZER_FAIL} of the trainable values)",
        "Trainable parameters the optimizer was not given.",
        "trainable parameters absent from every param group of the optimizer the run uses (the user's own, or the recipe's).",
        "An optimizer made before a layer was added, or over one sub-module, leaves the rest untrained.",
        "Make the optimizer over model.parameters() after the model is complete.",
    ),
    Code(
        "outputs-bounded",
        ("check-loss",),
        "warn (fail for probabilities)",
        "The model's outputs cannot be logits: never negative, or probabilities.",
        "class logits that are probabilities (rows in [0, 1] summing to 1: fail), or that come out of a bounding activation "
        "module run last: ReLU/ReLU6/Softplus with no negative output (warn), Sigmoid with every output in [0, 1] (fail).",
        "Cross-entropy applies log-softmax itself; a softmax or ReLU after the last layer is a common bug (forums, Humbatova et al.).",
        "Remove the activation after the last layer.",
    ),
    Code(
        "symmetric-units",
        ("check-loss",),
        "fail",
        "A hidden layer whose units all start with the same weights: they stay identical.",
        "a trainable Linear/Conv layer that runs before the last one has identical weight rows (a zero or constant init) and gets identical gradient rows from the first backward pass (a zero layer in front of a random one, such as a LoRA B matrix, breaks its symmetry at once and is not flagged).",
        "CS231n, weight initialisation: with a constant init every neuron computes the same output and gets the same gradient.",
        "Initialise hidden layers randomly (Kaiming for ReLU, Xavier for tanh); only the last layer may start at zero.",
    ),
    Code(
        "eval-not-deterministic",
        ("check-loss",),
        "fail",
        "Two evaluations of the same batch differ: dropout or other randomness is on at evaluation.",
        "two eval-mode passes on one batch differ by more than {structure.EVAL_TOLERANCE} (relative, outputs or loss).",
        "TheDeepChecker's train/eval consistency post-check; F.dropout(x, training=True) is the usual cause.",
        "Use nn.Dropout (or training=self.training) and call model.eval() to validate.",
    ),
    Code(
        "batch-dependence",
        ("check-loss",),
        "fail",
        "In eval mode an example's output depends on the other examples in its batch.",
        "in eval mode, reversing the examples of a batch, or scoring its first half alone, changes their outputs by more than "
        "{structure.PERMUTE_TOLERANCE} (relative; for a model in bf16/fp16, more than {structure.PERMUTE_EPS_FACTOR} roundings "
        "of its outputs' dtype), compared in fp32 with autocast and TF32 off.",
        "A model must treat examples independently at evaluation; a swapped batch/sequence axis or statistics over dim 0 mixes them.",
        "Look for a layer that mixes examples: batch_first, a transpose, a normalisation over the batch.",
    ),
    Code(
        "loss-broadcasts",
        ("check-loss",),
        "fail",
        "The loss compares outputs and targets of different shapes that broadcast: every output against every target.",
        "a custom loss (or a step's outputs and targets) with float targets whose shape differs from the outputs' and broadcasts "
        "to a larger shape, e.g. (B, 1) against (B,) -> (B, B); or PyTorch's 'target size ... different to the input size' warning.",
        "A silent bug PyTorch only warns about (mse_loss); forums are full of it.",
        "Squeeze the outputs or unsqueeze the targets so the shapes are equal before the loss.",
    ),
    Code(
        "loss-scales-with-batch",
        ("check-loss",),
        "warn",
        "The loss sums over the batch instead of averaging (reduction='sum').",
        "on the same examples the loss of n, n/2 and n/4 of them falls by a factor in {structure.SUM_RATIO} each time (n >= "
        "{structure.SUM_MIN_EXAMPLES}; custom losses, steps and models' own losses).",
        "TheDeepChecker's pre-check for a loss with mean reduction: a summed loss ties the usable LR to the batch size.",
        "Use reduction='mean' or divide by the batch size.",
    ),
    Code(
        "regularization-dominates",
        ("check-loss",),
        "warn",
        "The weight decay overwhelms the data loss.",
        "the L2 term of the weight decay is over {structure.REG_DOMINATES}x the data loss at init and its gradient (wd·w) over "
        "{structure.REG_DOMINATES}x the data's gradient, or decoupled decay removes over "
        "{structure.DECAY_PER_STEP_MAX} of each weight per step (lr x weight_decay).",
        "TheDeepChecker: regularisation overwhelming the data loss; CS231n: regularisation should raise the loss a little.",
        "Lower weight_decay (1e-5 to 1e-3 are usual), or use decoupled decay (AdamW).",
    ),
    # -- overfit-small ---------------------------------------------------------------------------
    Code(
        "loss-diverged",
        ("overfit-small",),
        "fail",
        "Training on a tiny subset blew up.",
        "the loss becomes NaN/Inf, or rises above {overfit_small.DIVERGED_FACTOR}x its initial value.",
        "CS231n: a loss above ~3x the initial one means stop early (the learning rate is too high).",
        "Lower optim.lr (`nndiag lr-find` measures how far), check the init scale, and clip gradients (train.grad_clip).",
    ),
    Code(
        "loss-not-decreasing",
        ("overfit-small",),
        "fail",
        "The model cannot even start to memorise a tiny subset: the loss barely moved.",
        "after --steps (default {defaults.OVERFIT_STEPS}) the best subset loss is still > {overfit_small.NOT_DECREASING}x "
        "the initial. When every weight's gradient was exactly zero at the first step, the LR is ruled out.",
        'CS231n: overfit a small portion of the data; "loss not going down: learning rate too low".',
        "Raise the learning rate (`nndiag lr-find` measures how far) unless the gradients are zero; otherwise look for a bad init "
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
    Code(
        "eval-train-mismatch",
        ("overfit-small",),
        "warn",
        "The model scores the subset it trained on far worse in eval mode than in train mode: its running statistics do not follow training.",
        "after the overfit run on the subset (memorised or not; then {overfit_small.SETTLE_PASSES} train-mode passes let running statistics settle), the "
        "eval-mode loss is over {overfit_small.EVAL_GAP_FACTOR}x the train-mode loss and above it by over "
        "{overfit_small.EVAL_GAP_SHARE} of the initial loss.",
        "TheDeepChecker's train/eval switch post-check; BatchNorm with momentum 0 or frozen buffers keeps its initial statistics.",
        "Check the BatchNorm layers (momentum, track_running_stats, buffers overwritten), then validate again.",
    ),
    Code(
        "clipping-always-active",
        ("overfit-small", "train"),
        "warn",
        "Gradient clipping rewrites nearly every step: the threshold is far below the gradient norm.",
        "train.grad_clip is exceeded on >= {train.CLIP_ACTIVE_SHARE} of the steps and the median gradient norm (before clipping) "
        "is >= {train.CLIP_FACTOR}x the threshold.",
        "Clipping is meant for rare spikes (Pascanu et al. 2013); always active, it fixes the step length and acts as a tiny LR.",
        "Raise train.grad_clip to about the usual gradient norm, or remove it.",
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
        "warn (info when the refine stage's trials settled the LR below the largest they tried)",
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
        "{curves.SPIKE_POINTS} points above it; or a validation spike above it that came back (a val point logged before the first "
        "train point scores the untrained model: where val starts, not a spike); or the smoothed loss climbs "
        "back by {curves.BLOWUP_RETRACE} of its drop and ends {curves.BLOWUP_RATIO}x above its best; train: the Trainer "
        "stopped the run as diverged.",
        "CS231n: a loss above ~3x the initial one means stop early.",
        "Lower the learning rate (`nndiag lr-find` measures how far), check the initialisation scale (`nndiag probe`), clip gradients.",
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
        "too-little-data",
        ("curves", "train"),
        "fail (warn in train when --max-steps asked for that few steps)",
        "The log is too short to judge: a run that stopped after a step or two is not a pass.",
        "fewer than {curves.MIN_DATA} points of training loss and fewer than {curves.MIN_DATA} of validation loss, and not "
        "diverged (the shape rules need {curves.MIN_POINTS}).",
        "What a CI gate needs: 'no problems found' on a log of one point would pass a run that died.",
        "Find out why the run stopped so early (a crash, a kill, a tiny max_steps); log the training loss every step and the "
        "validation loss every epoch.",
    ),
    Code(
        "log-damaged",
        ("curves",),
        "warn",
        "Part of a TensorBoard event file could not be read (corrupted bytes, or a file cut short).",
        "a record whose length or bytes fail their CRC-32C checksum, or a file that ends in the middle of a record; the count "
        "and the byte offsets are reported and the verdict reads the rest. When at least half of the records are unreadable "
        "the log gets no verdict (exit 2).",
        "The TFRecord format TensorBoard writes: every record carries masked CRC-32C checksums of its length and its bytes.",
        "Copy the event file again from where the run wrote it, or read the run's other logs (a CSV).",
    ),
    Code(
        "run-incomplete",
        ("curves",),
        "info (running) or warn (interrupted, or killed)",
        "The run whose folder was read has not finished: the curves are those of a partial run.",
        "the run folder's summary.json has status running (info while its process, on record there, is alive; warn when it is "
        "gone) or interrupted (nndiag train writes running when it starts, interrupted on Ctrl-C, the verdict at the end).",
        "nndiag train's run folder: its logs are written as training goes, so they can be read before it ends.",
        "Judge the finished run: wait for it to end, or run it again; a partial run's curves often look still-improving.",
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
        "the drop is < {curves.PLATEAU_MOVE} of the start (not for a run that starts below {curves.PLATEAU_LEVEL}x the chance-level "
        "loss: trained weights), or the loss ends >= {curves.PLATEAU_LEVEL}x its start (or the chance-level loss when known and "
        "larger) with a flat second half.",
        'CS231n: "loss not going down" (LR too low, bad init, dead units).',
        "Raise or decay the learning rate, try another optimizer or a bigger model, check data and labels; `nndiag probe` for dead units.",
    ),
    Code(
        "noisy",
        ("curves", "train"),
        "warn",
        "The loss curve is too wiggly.",
        "the step-to-step noise is >= {curves.NOISY_RATIO} of what the run learned: its whole drop, or from the chance-level "
        "loss to its end when that is known and larger (fine-tuning) (>= {curves.NOISY_MIN_POINTS} points).",
        'CS231n: "too wiggly: the batch size may be too small".',
        "Read a moving average; use a larger batch or a lower learning rate.",
    ),
    Code(
        "lr-too-low",
        ("curves", "train"),
        "warn",
        "The loss falls slowly and steadily: the learning rate is probably too low.",
        "ends >= {curves.LOW_LEVEL}x its start (or the chance-level loss when known and larger), 90% of the fall took more than {curves.LOW_SLOW} of the run, the first 10% of "
        "the run brought at most {curves.LOW_EARLY} of it, the first half fell at most {curves.LOW_LINEARITY}x the second, over "
        "at least {curves.LOW_MIN_STEPS} optimizer steps.",
        "CS231n's loss-curve picture (low learning rate: a slow, almost linear decline); an LR is judged over ~100 iterations.",
        "Raise the learning rate (`nndiag lr-find` measures how far).",
    ),
    Code(
        "lr-too-high",
        ("curves", "train"),
        "warn",
        "The loss dropped fast to a high, noisy floor: the learning rate is probably too high.",
        "90% of the fall within {curves.HIGH_FAST} of the run, ending >= {curves.HIGH_FLOOR}x its start (or the chance-level loss when known and larger) with noise >= "
        "{curves.HIGH_NOISE} of that level; or the validation loss swings >= {curves.HIGH_VAL_SWING} around its trend.",
        "CS231n's loss-curve picture (high learning rate: a fast drop to a plateau).",
        "Lower the learning rate (`nndiag lr-find` measures how far) or decay it.",
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
    Code(
        "accuracy-at-baseline",
        ("train",),
        "warn",
        "The model is no more accurate than always predicting the most frequent class.",
        "the best validation accuracy over the epochs is at most {train.BASELINE_MARGIN} above the majority baseline (the most "
        "frequent class's share of the training labels); on imbalanced data (a baseline >= {train.IMBALANCED}) only when the "
        "final balanced accuracy (mean per-class recall) is also within {train.BALANCED_MARGIN} of chance.",
        "An accuracy at the majority baseline means the model learned only the class frequencies (SageMaker Debugger's "
        "ClassImbalance; check-data reports the baseline).",
        "With imbalanced data: weight the loss by class or resample, and judge balanced accuracy; otherwise fix the causes of "
        "the other findings first.",
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
        "a ReLU or ReLU6 layer (LeakyReLU, PReLU and RReLU pass a gradient when negative: they cannot die) with >= {probe.DEAD_FRACTION} of its units never positive for any probed sample (per unit, not per element).",
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
    # -- issue 19: the LR schedule in a log (curves, train, and nndiag.watch's curves) -----------
    Code(
        "lr-schedule-collapses",
        ("curves", "train"),
        "warn",
        "The learning rate fell to ~0 early and stayed there: most of the run trained at no LR at all.",
        "the log's lr column (nndiag train's train_steps.csv, the HF Trainer's learning_rate, Lightning's lr-<Optimizer>, "
        "nndiag.watch's optimizer LR) falls below {curves.LR_COLLAPSE_FRACTION}x its peak by {curves.LR_COLLAPSE_BY} of the run "
        "and stays below to its end (at least {curves.LR_COLLAPSE_MIN_POINTS} LR values).",
        "A schedule sized in epochs but stepped every batch (StepLR(step_size=30) or ExponentialLR(0.95) with scheduler.step() "
        "inside the batch loop) decays 'epochs' of LR every batch; a cosine decay to 0 spends only its last ~2% below the threshold.",
        "Step the scheduler once per epoch, or size it in optimizer steps (T_max, step_size or milestones counted in steps, a "
        "gamma closer to 1).",
    ),
    # -- issue 19: the bugs only a hand-written training loop has (nndiag.watch; the callbacks run the same checks) --
    Code(
        "grads-accumulate",
        ("watch",),
        "fail",
        "Gradients are never zeroed: every optimizer step applies the sum of all the batch gradients so far.",
        "of at least {loop.ACCUMULATE_MIN_STEPS} optimizer steps whose next backward was seen, at least {loop.ACCUMULATE_SHARE} "
        "added to a gradient left over from the step before (the watched parameter's .grad was neither None nor zero when the "
        "first contribution after the step arrived). Accumulation on purpose (zero_grad() after every k-th step) is quiet.",
        "PyTorch accumulates into .grad on every backward; the optimizer does not clear it. A missing zero_grad() makes the "
        "k-th step's gradient the sum of k batch gradients: the effective LR grows with k until training diverges.",
        "Call optimizer.zero_grad() (or model.zero_grad()) once per optimizer step, before loss.backward().",
    ),
    Code(
        "no-optimizer-step",
        ("watch",),
        "fail (warn when the weights changed: another optimizer trains the model)",
        "The loop computes losses but never calls optimizer.step() on the optimizer nndiag watches.",
        "at least {loop.NO_STEP_MIN_FORWARDS} training forwards (grad enabled) and not one optimizer step (register_step_post_hook).",
        "Without optimizer.step() backward only fills .grad; nothing learns.",
        "Call optimizer.step() after loss.backward(); pass nndiag the optimizer your loop steps.",
    ),
    Code(
        "weights-unchanged",
        ("watch",),
        "fail",
        "Optimizer steps ran, yet not one trainable parameter of the model changed.",
        "at least {loop.UNCHANGED_MIN_STEPS} optimizer steps, and every trainable parameter's sum and norm the same at the end "
        "as at the start.",
        "An optimizer built over another model object (the model rebuilt or re-created after the optimizer), or an LR of 0, "
        "steps without moving this model.",
        "Build the optimizer over this model's parameters, after the model is built, with lr= above 0.",
    ),
    Code(
        "eval-mode-training",
        ("watch",),
        "warn",
        "The model trained in eval mode: dropout was off and BatchNorm used running statistics it never updated.",
        "the model has layers that compute otherwise in eval mode (dropout with p > 0, batch norm tracking running statistics) "
        "and at least {loop.EVAL_SHARE} of the optimizer steps (and at least "
        "{loop.EVAL_MIN_STEPS}) came after a training forward with model.training False.",
        "PyTorch's Module.train()/eval(): the flag stays as last set, so a validation pass that calls model.eval() leaves the "
        "rest of training in eval mode until model.train() is called again.",
        "Call model.train() before the training steps, and again after every validation pass.",
    ),
    Code(
        "no-gradient-at-step",
        ("watch",),
        "fail",
        "No gradient reaches the model's parameters: the loss has no graph back to the model, or the gradients are cleared "
        "before the step.",
        "loss.backward() raised because the loss does not require grad; or at least {loop.NO_GRAD_SHARE} of at least "
        "{loop.NO_GRAD_MIN_STEPS} optimizer steps ran with no gradient on any trainable parameter: none reached the watched one "
        "(the last trainable one that got a gradient at the first step) and no other held a non-zero one (a head a step did "
        "not use is not counted).",
        "A loss computed under torch.no_grad(), or from .detach() / .item(), carries no graph; zero_grad() between backward() "
        "and step() clears what backward computed.",
        "Compute the loss from the model's output with gradients on, and call zero_grad() before backward(), never between "
        "backward() and step().",
    ),
    Code(
        "same-batch-repeated",
        ("watch",),
        "warn",
        "The loop trains on one batch over and over.",
        "at least {loop.SAME_BATCH_MIN_FORWARDS} training forwards fingerprinted (every one of the first "
        "{loop.FINGERPRINT_HEAD}, then every {loop.FINGERPRINT_EVERY}th; {loop.FINGERPRINT_ELEMENTS} input elements at fixed "
        "positions, hashed) and all of them the same input.",
        "x, y = next(iter(loader)) before the loop (instead of for x, y in loader) feeds one batch forever: the training loss "
        "falls while nothing generalises. Full-batch training on purpose looks the same.",
        "Draw a new batch every iteration; ignore this for full-batch gradient descent.",
    ),
]

REGISTRY: dict[str, Code] = {entry.code: entry for entry in ENTRIES}


def codes_by_command() -> dict[str, tuple[str, ...]]:
    """command -> its codes, in registry order (train's curves codes listed under curves; train's own under train)."""
    out: dict[str, list[str]] = {}
    for entry in ENTRIES:
        for command in entry.commands:
            if command != "train" or "curves" not in entry.commands:
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

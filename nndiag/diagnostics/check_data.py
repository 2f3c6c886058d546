"""Step 0 of the recipe: check the data before the model sees it (`nndiag check-data`, the first step of babysit).

Real-fault studies put data and input faults first (Humbatova et al., ICSE 2020: 36% of real faults):
NaNs in the inputs, labels that do not match the model's outputs, a validation set that overlaps the
training set, a loader that yields one class at a time. None of them is a learning-rate problem, and
none shows clearly in how the loss moves. This step measures each one directly, on up to
SAMPLE_EXAMPLES training examples (all of them when the data is held on the device and smaller) and as
many validation examples, without training anything.

Measured (`measure`), then decided (`decide`, pure):
  non-finite-data       fail  NaN/Inf in the inputs or the targets: counts and the first example indices
  labels-out-of-range   fail  class targets outside [0, C) (C: the size of the model's logits' class
                              axis; -100 is ignored as in PyTorch), or non-integer values with a class loss
  missing-classes       warn  a class of the model's C never appears among the training labels although
                              every other one does often (labels that start at 1, a class dropped by a filter)
  class-imbalance       info  the majority class holds >= IMBALANCE_SHARE of the examples: the majority
                              baseline (its share) is the accuracy a model gets by predicting it always;
                              later steps judge accuracy against it
  train-val-overlap     warn  >= OVERLAP_SHARE of the validation examples also appear (exactly) in training
  few-distinct-examples warn  one pass over the training data yields < DISTINCT_SHARE distinct examples
                              (fail below DISTINCT_FAIL): a Dataset that returns the same items over and over;
                              judged against the distinct examples the values allow (few categorical
                              features repeat by nature: 3 binary ones allow 8)
  unshuffled-batches    warn  a user's own DataLoader: its first batches hold a median of at most DIVERSITY_SHARE
                              of the classes a shuffled batch of their size would hold (shuffle off over sorted data)
  constant-features     info  some input features never change (digits' corner pixels); warn when
                              >= CONSTANT_WARN of them do (the inputs carry almost nothing)
  inputs-not-normalized warn  the input scale: RMS outside INPUT_RMS_RANGE (a small one is fine for sparse
                              inputs, >= SPARSE_SHARE exact zeros: one-hot, bag of words), or one feature's |mean| + std
                              above FEATURE_SCALE_MAX (floating inputs only)
  labels-look-random    warn  the labels do not depend on the inputs: the 1-nearest-neighbour accuracy of
                              the training labels (leave one out, standardised inputs, up to KNN_EXAMPLES)
                              is within KNN_SIGMAS standard errors of the same accuracy with the labels
                              permuted (floating inputs, class labels, at least KNN_MIN_EXAMPLES)
Measured on the healthy built-in sets: digits 1-NN 97% (null 9%), MNIST-1D 52% (11%), spiral 100%
(34%); digits with its labels shuffled: 10% (10%).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from nndiag.findings import Verdict
from nndiag.result import Result
from nndiag.training import batch as batching
from nndiag.training.scoring import IGNORE_INDEX, labels_outside
from nndiag.training.splits import LoaderSplit, Split, StreamSplit, TensorSplit

SAMPLE_EXAMPLES = 20_000  # examples of each split examined (a seeded random choice beyond that)
IMBALANCE_SHARE = 0.5  # class-imbalance: the majority class holds at least this share (and C >= 2)
MISSING_MIN_COUNT = 5  # missing-classes: every other class has at least this many examples
OVERLAP_SHARE = 0.05  # train-val-overlap: this share of validation examples is found in training
DISTINCT_SHARE = 0.5  # few-distinct-examples: distinct examples / examples below this
DISTINCT_FAIL = 0.1  # ... and a fail below this
DIVERSITY_SHARE = 0.5  # unshuffled-batches: the median batch holds at most this share of the classes a shuffled one would
MIN_EXPECTED_CLASSES = 2.5  # ... judged only when a shuffled batch would hold at least this many classes
LOADER_BATCHES = 20  # batches of a user's DataLoader examined for single-class batches
CONSTANT_WARN = 0.9  # constant-features: a warning when this share of the features never changes
INPUT_RMS_RANGE = (0.01, 10.0)  # healthy root-mean-square of the inputs
FEATURE_SCALE_MAX = 100.0  # one feature with |mean| + std above this dominates the others
SPARSE_SHARE = 0.9  # inputs with at least this share of exact zeros are sparse: a small RMS is their nature
KNN_EXAMPLES = 2000  # labels-look-random: training examples in the 1-NN test
KNN_MIN_EXAMPLES = 200  # ... and at least this many
KNN_SIGMAS = 3.0  # ... the 1-NN accuracy must beat the permuted-label accuracy by this many standard errors
FIRST_SHOWN = 5  # example indices quoted in a finding


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def gather(split: Split, n: int, seed: int) -> tuple[list[Any], list[torch.Tensor | None], torch.Tensor | None]:
    """Up to n examples of a split as (the batches' inputs, the batches' targets, their indices in the split): all of
    them in order when there are at most n, else a seeded random choice kept in index order; a user's DataLoader
    gives its first batches in its own order (indices None: positions count in that order)."""
    if isinstance(split, (TensorSplit, StreamSplit)):
        size = len(split)
        rows = torch.arange(size) if size <= n else torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        if isinstance(split, TensorSplit):
            batches = [batching.index(split.data, rows.to(next(batching.tensors(split.data)).device))]
        else:
            batches = list(split.subset_at(rows.tolist()).batches(min(len(rows), 1024)))
    else:
        taken = split.take(n)
        batches, rows = list(taken.batches(max(len(taken), 1))), None
    return [batching.inputs_of(b) for b in batches], [batching.targets_of(b) for b in batches], rows


def _float_leaves(inputs: Any) -> list[torch.Tensor]:
    return [t for t in batching.tensors(inputs) if t.is_floating_point()]


def _row_hashes(inputs_list: list[Any]) -> list[bytes]:
    """One digest per example of its input tensors' bytes (exact duplicates have equal digests)."""
    out = []
    for inputs in inputs_list:
        leaves = [t.detach().cpu().contiguous() for t in batching.tensors(inputs)]
        if not leaves:
            continue
        rows = [leaf.reshape(leaf.shape[0], -1).numpy() if leaf.dim() else leaf.reshape(1, 1).numpy() for leaf in leaves]
        for i in range(rows[0].shape[0]):
            digest = hashlib.blake2b(digest_size=16)
            for r in rows:
                digest.update(r[i].tobytes())
            out.append(digest.digest())
    return out


def _possible_distinct(inputs_list: list[Any], enough: int) -> int:
    """How many distinct examples the inputs' values allow at most: the product of each input value's number of distinct
    values (columns read until the product reaches `enough`, so images stop after a pixel or two). Tabular data of a
    few categorical features (3 binary ones: 8) repeats by nature, not because a Dataset returns the same item."""
    leaves = [[t.detach().cpu().reshape(t.shape[0], -1) for t in batching.tensors(inputs) if t.dim()] for inputs in inputs_list]
    if not leaves or not leaves[0]:
        return enough
    columns = [torch.cat([batch[k] for batch in leaves]) for k in range(len(leaves[0]))]
    possible = 1
    for column in columns:
        for j in range(column.shape[1]):
            possible *= int(torch.unique(column[:, j]).numel())
            if possible >= enough:
                return enough
    return possible


def _nonfinite(batches: list[list[torch.Tensor]]) -> tuple[int, list[int]]:
    """(examples with a NaN/Inf value in any of their tensors, the first such indices) over batches, each given as
    its floating tensors (all with the batch's examples first)."""
    count, first, offset = 0, [], 0
    for leaves in batches:
        if not leaves:
            continue
        rows = leaves[0].shape[0] if leaves[0].dim() else 1
        bad = torch.zeros(rows, dtype=torch.bool, device=leaves[0].device)
        for leaf in leaves:
            bad |= ~torch.isfinite(leaf.reshape(rows, -1)).all(dim=1)
        idx = torch.nonzero(bad).flatten().cpu()
        count += int(idx.numel())
        first += [offset + int(i) for i in idx[: max(0, FIRST_SHOWN - len(first))]]
        offset += rows
    return count, first


def _flat_inputs(inputs_list: list[Any]) -> torch.Tensor | None:
    """The first floating input leaf of every batch, flattened to (examples, features), when they concatenate."""
    leaves = [(_float_leaves(x) or [None])[0] for x in inputs_list]
    if not leaves or any(leaf is None for leaf in leaves):
        return None
    flat = [leaf.detach().float().cpu().reshape(leaf.shape[0], -1) for leaf in leaves]  # type: ignore[union-attr]
    return torch.cat(flat) if len({f.shape[1] for f in flat}) == 1 else None


def _class_targets(targets: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Every integer class label (ignored ones dropped) as one flat tensor, or None for float / absent targets."""
    kept = [t.detach().cpu().reshape(-1) for t in targets if isinstance(t, torch.Tensor)]
    if not kept or any(t.is_floating_point() or t.is_complex() for t in kept):
        return None
    labels = torch.cat(kept).long()
    return labels[labels != IGNORE_INDEX]


def knn_accuracy(x: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[float, float, int]:
    """(leave-one-out 1-NN accuracy, the same with the labels permuted, examples used) on standardised inputs."""
    g = torch.Generator().manual_seed(seed)
    n = min(len(labels), KNN_EXAMPLES)
    idx = torch.randperm(len(labels), generator=g)[:n]
    x, y = x[idx].float(), labels[idx]
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    distance = torch.cdist(x, x)
    distance.fill_diagonal_(math.inf)
    nearest = distance.argmin(dim=1)
    permuted = y[torch.randperm(n, generator=g)]
    return float((y[nearest] == y).float().mean()), float((permuted[nearest] == permuted).float().mean()), n


def measure(train: Split, val: Split | None, classes: int | None, *, seed: int = 0, user_loader: bool = False) -> dict[str, Any]:
    """Everything `decide` reads. `classes`: the model's C (its logits' class axis), when known; `val`: None when
    there is no separate validation split (the API on one DataLoader)."""
    inputs, targets, rows = gather(train, SAMPLE_EXAMPLES, seed)
    examples = sum(batching.size(x) if batching.size(x) else 0 for x in inputs) or sum(t.shape[0] for t in targets if t is not None)
    facts: dict[str, Any] = {"examples": examples, "split_size": len(train), "classes": classes}

    def located(found: tuple[int, list[int]]) -> tuple[int, list[int]]:  # sample positions -> the split's indices
        count, first = found
        return count, [int(rows[i]) for i in first] if rows is not None else first

    facts["input_nonfinite"], facts["input_nonfinite_first"] = located(_nonfinite([_float_leaves(x) for x in inputs]))
    float_targets = [[t] for t in targets if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim()]
    facts["target_nonfinite"], facts["target_nonfinite_first"] = located(_nonfinite(float_targets))
    labels = _class_targets(targets)
    facts["labels"] = labels is not None
    if labels is not None and labels.numel():
        top = int(labels.max()) + 1
        counts = torch.bincount(labels.clamp_min(0), minlength=max(classes or 0, top)).tolist()
        facts.update(
            class_counts=counts,
            majority_class=int(np.argmax(counts)),
            majority_share=max(counts) / max(sum(counts), 1),
            out_of_range=labels_outside(labels, classes),
        )
    hashes = _row_hashes(inputs)
    facts["distinct"] = len(set(hashes))
    facts["hashed"] = len(hashes)
    facts["possible_distinct"] = _possible_distinct(inputs, len(hashes))
    if val is not None and val is not train:
        val_inputs, _, val_rows = gather(val, SAMPLE_EXAMPLES, seed)
        val_hashes = _row_hashes(val_inputs)
        seen = set(hashes)
        inside = [int(val_rows[i]) if val_rows is not None else i for i, h in enumerate(val_hashes) if h in seen]
        facts.update(val_examples=len(val_hashes), val_in_train=len(inside), val_in_train_first=inside[:FIRST_SHOWN])
    flat = _flat_inputs(inputs)
    if flat is not None and len(flat) > 1:
        finite = flat[torch.isfinite(flat).all(dim=1)]
        if len(finite) > 1:
            std, mean = finite.std(dim=0), finite.mean(dim=0)
            varying = std > 1e-8
            scale = (mean.abs() + std)[varying]
            facts["inputs"] = {
                "mean": float(finite.mean()),
                "rms": float(finite.pow(2).mean().sqrt()),
                "std": float(finite.std()),
                "features": int(flat.shape[1]),
                "constant_features": int((~varying).sum()),
                "max_feature_scale": float(scale.max()) if scale.numel() else 0.0,
                "zero_share": float((finite == 0).float().mean()),
            }
            if (
                labels is not None
                and len(labels) == len(flat)
                and len(finite) == len(flat)
                and len(flat) >= KNN_MIN_EXAMPLES
                and varying.any()
            ):
                facts["knn_accuracy"], facts["knn_null"], facts["knn_examples"] = knn_accuracy(flat[:, varying], labels, seed)
    if user_loader and isinstance(train, LoaderSplit) and labels is not None and facts.get("class_counts"):
        facts.update(_class_poor_batches(train, facts["class_counts"]))
    return facts


def _class_poor_batches(split: LoaderSplit, counts: list[int]) -> dict[str, Any]:
    """How many classes the loader's first LOADER_BATCHES batches hold, against what a shuffled batch of the same size
    would hold on average (sum over classes of 1 - (1 - p_c)^b, from the class shares p_c of the examined labels)."""
    total = max(sum(counts), 1)
    shares = [c / total for c in counts if c]
    distinct, expected = [], []
    for i, batch in enumerate(split.batches()):
        if i >= LOADER_BATCHES:
            break
        labels = _class_targets([batching.targets_of(batch)])
        if labels is None or labels.numel() < 2:
            continue
        distinct.append(int(torch.unique(labels).numel()))
        expected.append(sum(1 - (1 - p) ** labels.numel() for p in shares))
    if not distinct:
        return {}
    return {
        "loader_batches": len(distinct),
        "median_classes_per_batch": float(np.median(distinct)),
        "expected_classes_per_batch": float(np.median(expected)),
    }


# --------------------------------------------------------------------------------------------
# Deciding (pure)
# --------------------------------------------------------------------------------------------


def _shown(indices: list[int]) -> str:
    return ", ".join(map(str, indices)) + (", ..." if len(indices) >= FIRST_SHOWN else "")


def labels_finding(verdict: Verdict, bad: dict[str, Any]) -> None:
    """labels-out-of-range from `scoring.labels_outside`'s facts (check-data's own, or a DataFault's)."""
    classes = bad["classes"]
    shift = " (the labels look shifted by one: 1..C instead of 0..C-1)" if bad["low"] >= 1 and bad["high"] == classes else ""
    verdict.add(
        "labels-out-of-range",
        "fail",
        f"{bad['count']} class labels lie outside [0, {classes}) for a model with {classes} outputs: values "
        f"{', '.join(map(str, bad['values']))} (labels range {bad['low']}..{bad['high']}){shift}",
        f"Class labels must be integers 0..C-1 for the model's C = {classes} outputs: remap them (e.g. y - 1 when they "
        f"start at 1), or give the model as many outputs as there are classes ({bad['high'] + 1}).",
        **bad,
    )


def fault_result(command: str, bad: dict[str, Any]) -> Result:
    """What any command returns when the experiment could not be built because of out-of-range labels (a DataFault):
    its failing finding, instead of a crash."""
    verdict = Verdict()
    labels_finding(verdict, bad)
    return Result(command, verdict, {}, {"classes": bad["classes"], "labels_out_of_range": bad["count"]})


def decide(facts: dict[str, Any]) -> Verdict:
    verdict = Verdict()
    n = facts["examples"]
    if facts["input_nonfinite"]:
        verdict.add(
            "non-finite-data",
            "fail",
            f"{facts['input_nonfinite']} of {n} training examples have NaN/Inf inputs (first at index {_shown(facts['input_nonfinite_first'])})",
            "Fix the data: drop or impute those rows (a failed parse, a division by zero in preprocessing, a missing value "
            "read as NaN). No learning rate helps: one NaN input makes the loss NaN.",
            where="inputs",
            examples_affected=facts["input_nonfinite"],
            first_indices=facts["input_nonfinite_first"],
        )
    if facts["target_nonfinite"]:
        verdict.add(
            "non-finite-data",
            "fail",
            f"{facts['target_nonfinite']} of {n} training examples have NaN/Inf targets (first at index {_shown(facts['target_nonfinite_first'])})",
            "Fix or drop the rows whose targets are NaN/Inf: the loss on them is NaN.",
            where="targets",
            examples_affected=facts["target_nonfinite"],
            first_indices=facts["target_nonfinite_first"],
        )
    bad = facts.get("out_of_range")
    if bad:
        labels_finding(verdict, bad)
    counts = facts.get("class_counts")
    classes = facts.get("classes")
    if counts and not bad:
        present = [c for c in counts[: classes or len(counts)]]
        empty = [k for k, c in enumerate(present) if c == 0]
        if empty and len(present) - len(empty) >= 2 and min(c for c in present if c) >= MISSING_MIN_COUNT:
            verdict.add(
                "missing-classes",
                "warn",
                f"class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty[:10]))} of the model's {len(present)} "
                f"never appear{'s' if len(empty) == 1 else ''} among {n} training labels, while every other class has at least "
                f"{min(c for c in present if c)}",
                "Check the label mapping (labels that start at 1 leave class 0 empty) and any filtering of the data; the model "
                "spends an output on a class it never sees.",
                empty_classes=empty,
                classes=len(present),
            )
        if len(counts) >= 2 and facts["majority_share"] >= IMBALANCE_SHARE:
            verdict.add(
                "class-imbalance",
                "info",
                f"class {facts['majority_class']} holds {facts['majority_share']:.1%} of the training labels: a model that always "
                f"predicts it scores {facts['majority_share']:.1%} accuracy (the majority baseline later steps are judged against)",
                "Judge accuracy against the baseline (or use balanced accuracy / per-class recall); if the model only ever "
                "predicts the majority class, weight the loss by class or resample.",
                majority_class=facts["majority_class"],
                majority_share=facts["majority_share"],
                class_counts=counts,
            )
    overlap = facts.get("val_in_train")
    if overlap and facts["val_examples"] and overlap / facts["val_examples"] >= OVERLAP_SHARE:
        share = overlap / facts["val_examples"]
        verdict.add(
            "train-val-overlap",
            "warn",
            f"{overlap} of {facts['val_examples']} validation examples ({share:.0%}) also appear in the training data (first "
            f"validation indices {_shown(facts['val_in_train_first'])}): validation measures memory, not generalisation",
            "Split the data before any augmentation or duplication, and de-duplicate across the split (hash the rows); "
            "report validation on examples the model never trained on.",
            val_in_train=overlap,
            val_examples=facts["val_examples"],
            share=share,
        )
    possible = min(facts["hashed"], facts.get("possible_distinct", facts["hashed"]))
    if facts["hashed"] >= 10 and possible:
        distinct_share = facts["distinct"] / facts["hashed"]
        if facts["distinct"] < DISTINCT_SHARE * possible:  # fewer than the values allow: not inherent repetition
            verdict.add(
                "few-distinct-examples",
                "fail" if distinct_share < DISTINCT_FAIL else "warn",
                f"one pass over the training data yields only {facts['distinct']} distinct examples out of {facts['hashed']} "
                f"({distinct_share:.1%})",
                "Check the Dataset's __getitem__ (an index that is ignored or taken modulo a small number, a cache that "
                "returns the same item) and the sampler; duplicated data looks larger than it is.",
                distinct=facts["distinct"],
                examples=facts["hashed"],
                share=distinct_share,
                possible_distinct=possible,
            )
    if facts.get("loader_batches") and facts["expected_classes_per_batch"] >= MIN_EXPECTED_CLASSES:
        seen, expected = facts["median_classes_per_batch"], facts["expected_classes_per_batch"]
        if seen <= DIVERSITY_SHARE * expected:
            verdict.add(
                "unshuffled-batches",
                "warn",
                f"the loader's batches hold few classes: a median of {seen:g} per batch over its first {facts['loader_batches']} "
                f"batches, where shuffled batches of that size would hold about {expected:.1f}: the data reaches the model "
                "sorted by class",
                "Shuffle the training DataLoader (DataLoader(..., shuffle=True) or a RandomSampler): batches of one or two "
                "classes pull the model from class to class and it never fits them together.",
                median_classes_per_batch=seen,
                expected_classes_per_batch=expected,
                loader_batches=facts["loader_batches"],
            )
    stats = facts.get("inputs")
    if stats:
        constant, features = stats["constant_features"], stats["features"]
        if constant:
            share = constant / features
            verdict.add(
                "constant-features",
                "warn" if share >= CONSTANT_WARN else "info",
                f"{constant} of {features} input features never change across {n} examples",
                "Constant features carry no information; harmless in small numbers (an image's border), but when nearly all "
                "are constant look for a preprocessing bug (everything zeroed, a wrong column).",
                constant_features=constant,
                features=features,
                share=share,
            )
        lo, hi = INPUT_RMS_RANGE
        rms, feature = stats["rms"], stats["max_feature_scale"]
        sparse = stats.get("zero_share", 0.0) >= SPARSE_SHARE  # one-hot, bag of words: small by design, and standardising
        if rms > hi or (0 < rms < lo and not sparse) or feature > FEATURE_SCALE_MAX:  # would destroy the sparsity
            verdict.add(
                "inputs-not-normalized",
                "warn",
                f"inputs are far from zero mean / unit scale: RMS {rms:.3g}, mean {stats['mean']:.3g}, std {stats['std']:.3g}, "
                f"largest feature |mean|+std {feature:.3g}",
                "Standardise the inputs with training-set statistics (data.normalize: true, or in your data target); "
                "unscaled inputs make the initial loss and the usable learning rate depend on the data's units.",
                rms=rms,
                mean=stats["mean"],
                std=stats["std"],
                max_feature_scale=feature,
            )
    if "knn_accuracy" in facts:
        acc, null, m = facts["knn_accuracy"], facts["knn_null"], facts["knn_examples"]
        margin = KNN_SIGMAS * math.sqrt(max(null * (1 - null), 1e-12) / m)
        if acc <= null + margin:
            verdict.add(
                "labels-look-random",
                "warn",
                f"the labels do not follow the inputs: each training example's nearest neighbour has the same label {acc:.1%} of "
                f"the time, no better than with the labels shuffled ({null:.1%}; {m} examples)",
                "Check that inputs and labels stay paired: shuffled separately, sorted apart, read from different files or "
                "columns. (A task whose classes no raw-input distance can tell apart also looks like this; then ignore it.)",
                knn_accuracy=acc,
                knn_null=null,
                knn_examples=m,
            )
    return verdict


def table(facts: dict[str, Any]) -> pd.DataFrame:
    """check_data.csv: one row per class (its count and share), or one row of totals without class labels."""
    counts = facts.get("class_counts")
    if counts:
        total = max(sum(counts), 1)
        return pd.DataFrame({"class": range(len(counts)), "count": counts, "share": [c / total for c in counts]})
    return pd.DataFrame([{"examples": facts["examples"], "distinct": facts["distinct"]}])


def metrics_of(facts: dict[str, Any]) -> dict[str, Any]:
    stats = facts.get("inputs") or {}
    return {
        "examples": facts["examples"],
        "distinct_examples": facts["distinct"],
        "classes": facts.get("classes"),
        "majority_baseline_acc": facts.get("majority_share"),
        "val_in_train": facts.get("val_in_train"),
        "input_rms": stats.get("rms"),
        "constant_features": stats.get("constant_features"),
        "knn_accuracy": facts.get("knn_accuracy"),
        "knn_null_accuracy": facts.get("knn_null"),
    }


def run(train: Split, val: Split | None, classes: int | None, *, seed: int = 0, user_loader: bool = False) -> Result:
    facts = measure(train, val, classes, seed=seed, user_loader=user_loader)
    return Result("check-data", decide(facts), {"check_data": table(facts)}, metrics_of(facts))

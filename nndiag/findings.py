"""Findings, verdicts and exit codes: the contract CI jobs and other programs rely on.

A diagnostic decides by returning a `Verdict`: a list of `Finding`s, each with a stable code from
`CODES`, a severity, a one-sentence message, advice on what to do next, and the numbers behind it.

May import: nndiag.codes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from nndiag.codes import codes_by_command

# Every finding code a user can see, by the command that raises it. Stable: relied on by CI scripts;
# add codes, never rename them. Each is described in the registry (nndiag.codes), the one source of
# truth for its meaning, rule, thresholds, source and advice (`nndiag explain CODE`).
CODES: dict[str, tuple[str, ...]] = codes_by_command()
ALL_CODES = frozenset(code for codes in CODES.values() for code in codes)

SEVERITIES = ("info", "warn", "fail")  # info never changes the status; warn -> "warn"; fail -> "fail"

# CS231n: "a loss above ~3x the initial one means stop early". Every divergence rule uses this factor.
DIVERGENCE_FACTOR = 3.0

EXIT_OK = 0  # pass or warn
EXIT_FAIL = 1  # at least one finding of severity "fail"
EXIT_BAD_INPUT = 2  # unreadable recipe, unknown key, bad value, missing file, malformed CSV
EXIT_CRASH = 3  # nndiag (or the user's own model/data code) crashed: the traceback is on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it): what finished is kept


@dataclass
class Finding:
    code: str  # one of ALL_CODES
    severity: str  # one of SEVERITIES
    message: str  # what was seen, with the numbers
    advice: str  # what to do next
    evidence: dict[str, Any] = field(default_factory=dict)  # the numbers behind the message

    def __post_init__(self) -> None:
        if self.code not in ALL_CODES:
            raise ValueError(f"unknown finding code {self.code!r}; add it to the registry (nndiag/codes.py) first")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; expected one of {SEVERITIES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'fail' if any finding fails, else 'warn' if any warns, else 'pass'."""
        severities = {f.severity for f in self.findings}
        if "fail" in severities:
            return "fail"
        if "warn" in severities:
            return "warn"
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self.status == "fail" else EXIT_OK

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def add(self, code: str, severity: str, message: str, advice: str, **evidence: Any) -> Finding:
        finding = Finding(code, severity, message, advice, evidence)
        self.findings.append(finding)
        return finding

    def extend(self, other: "Verdict") -> None:
        self.findings.extend(other.findings)

    def address(self, audience: str) -> "Verdict":
        """Every finding's advice in the words of `audience` (see `addressed`); returns self."""
        for finding in self.findings:
            finding.advice = addressed(finding.advice, audience)
        return self


# --------------------------------------------------------------------------------------------
# Advice in its reader's words: recipe keys and CLI flags for a recipe, Python arguments for your own objects
# --------------------------------------------------------------------------------------------

AUDIENCES = ("recipe", "python")  # who reads the advice: a recipe's user (the CLI, babysit), or Python code on its own objects

# A recipe user changes a recipe key; someone who called nndiag on their own model, optimizer and loop (the API on their
# objects, nndiag.watch, the Lightning and Hugging Face callbacks) changes an argument of their own code. Advice is written
# once, in the recipe's words; for a Python reader these phrases are said instead (the longest phrase first), then every
# `--flag` becomes the keyword argument it is in Python (`--batches-per-lr 8` -> `batches_per_lr=8`) and every
# `nndiag <command>` the function (`nndiag.lr_find`).
PYTHON_WORDS: tuple[tuple[str, str], ...] = (
    ("(--expected, or expected= in Python)", "(expected=)"),
    ("(--expected, expected= in Python)", "(expected=)"),
    ("--candidates 1e-1,1e-2,1e-3,1e-4", "candidates=[1e-1, 1e-2, 1e-3, 1e-4]"),
    ("(data.normalize: true, or in your data target)", "(in your Dataset or its transform)"),
    ("(data.normalize: true)", "(in your Dataset or its transform)"),
    ("data.normalize: true", "inputs standardised in your Dataset"),
    ("train.early_stopping.patience keeps the best weights", "keep the weights of the best validation epoch"),
    ("(train.early_stopping)", "(keep the weights of the best validation epoch)"),
    ("(schedule: cosine or step)", "(torch.optim.lr_scheduler: CosineAnnealingLR or StepLR)"),
    ("(schedule: {name: cosine, warmup_steps: 500})", "(torch.optim.lr_scheduler.LinearLR over the first ~500 steps)"),
    ("(schedule.warmup_steps)", "(torch.optim.lr_scheduler.LinearLR)"),
    ("the one the recipe names", "the one you meant"),
    ("(model.args.init)", "(torch.nn.init)"),
    ("model.args.init", "your model's init (torch.nn.init)"),
    ("train.grad_clip", "torch.nn.utils.clip_grad_norm_"),
    ("a larger train.batch_size", "a larger batch_size= in your DataLoader"),
    ("train.batch_size", "your DataLoader's batch_size="),
    ("train.epochs", "the number of epochs"),
    ("optim.weight_decay", "your optimizer's weight_decay="),
    ("optim.lr", "your optimizer's lr="),
)
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?: (?=[0-9])([^\s,;)]+))?")
_COMMAND = re.compile(r"\bnndiag (check-loss|overfit-small|lr-find|search|train|curves|probe|babysit)\b")


def addressed(text: str, audience: str) -> str:
    """`text` (advice written in a recipe's words) as `audience` reads it: unchanged for "recipe"; for "python", with
    PYTHON_WORDS' phrases replaced, CLI flags as keyword arguments and commands as API functions. Idempotent."""
    if audience == "recipe" or not text:
        return text
    if audience != "python":
        raise ValueError(f"unknown audience {audience!r}; expected one of {AUDIENCES}")
    for recipe_words, python_words in PYTHON_WORDS:
        text = text.replace(recipe_words, python_words)
    text = _FLAG.sub(lambda m: f"{m.group(1).replace('-', '_')}=" + (m.group(2) or ""), text)
    return _COMMAND.sub(lambda m: f"nndiag.{m.group(1).replace('-', '_')}", text)


def audience_of(source: str | None) -> str:
    """Who reads a run's advice, from its source (a Result's or Run's `source`): "python" for your own objects, else "recipe"."""
    return "python" if source == "python" else "recipe"


# How far to move the learning rate: said one way everywhere, so that one report never quotes two factors. A factor is
# quoted only where a rule measured it (the probe's update ratio against a healthy ~1e-3); elsewhere the advice says that
# `nndiag lr-find` measures it, and a root cause quotes the factor its evidence measured (`lr_factor` in the evidence).
LR_FACTOR_MIN, LR_FACTOR_MAX = 3.0, 1000.0  # a quoted factor stays in this range (beyond it: "1000x or more")


def lr_move(direction: str, factor: float | None = None) -> str:
    """'lower optim.lr by about 300x' for a measured factor, 'by 1000x or more' beyond LR_FACTOR_MAX (or infinite),
    'lower optim.lr (`nndiag lr-find` measures how far)' when nothing measured it. `direction`: "lower" | "raise"."""
    if direction not in ("lower", "raise"):
        raise ValueError(f"direction: expected 'lower' or 'raise', got {direction!r}")
    if factor is None:
        return f"{direction} optim.lr (`nndiag lr-find` measures how far)"
    if factor != factor or factor > LR_FACTOR_MAX:  # NaN or inf: beyond any factor worth quoting
        return f"{direction} optim.lr by {LR_FACTOR_MAX:g}x or more"
    shown = float(f"{max(factor, LR_FACTOR_MIN):.1g}")
    return f"{direction} optim.lr by about {shown:g}x"

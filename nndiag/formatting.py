"""Numbers and names as a person reads them, in every table, report and figure.

JSON keeps its stable snake_case keys and raw numbers (`jsonable`: plain JSON values; `recipe_yaml`: a
recipe as YAML to read and re-run); what people read goes through here:
  accuracies and fractions  percentages            final_accuracy 1.0       -> final accuracy  100%
  learning rates            scientific notation     suggested_lr 0.00316     -> suggested LR    3.16e-3
  other floats              4 significant digits    initial_loss 2.302585    -> initial loss    2.303
  integers                  thousands separators    steps_run 12000          -> steps run       12,000
  positions                 as integers             best_val_acc_at_epoch 1.0 -> best val accuracy at epoch  1
The kind of a number is read from its key (the words acc/accuracy, frac/fraction/share/pct, lr; a key
ending in "at" and an epoch or step says where something happened, whatever it names before), so the
same key prints the same way everywhere. This module imports nothing heavy.

May import: nothing of nndiag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

PERCENT_WORDS = {"acc", "accuracy", "frac", "fraction", "share", "pct", "percent"}  # values in [0, 1] shown as %
LR_WORDS = {"lr", "decay", "eps"}  # learning rates (and weight decay, epsilon): scientific notation
WORDS = {"acc": "accuracy", "frac": "fraction", "lr": "LR", "100pct": "100%", "pct": "%", "num": "number"}  # key parts spelled out
SIGNIFICANT = 4  # significant digits of an ordinary float
POSITION_WORDS = {"epoch", "step", "iteration", "iter", "batch", "point"}  # "..._at_epoch": the value is a position, not what it names


def _tokens(key: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", key.lower()) if t]


def kind(key: str) -> str:
    """percent | lr (scientific) | plain: how a number under this key is shown."""
    ordered = _tokens(key)
    if ordered and ordered[-1] in POSITION_WORDS and "at" in ordered[:-1]:
        return "plain"  # best_val_acc_at_epoch, best_val_loss_at_step: where, not how much
    tokens = set(ordered)
    if tokens & LR_WORDS or "learning_rate" in key.lower():
        return "lr"
    if tokens & PERCENT_WORDS and "steps" not in tokens:  # steps_to_100pct counts steps
        return "percent"
    return "plain"


def words(key: str) -> str:
    """A JSON key as words: final_val_acc -> 'final val accuracy', lr-find.suggested_lr -> 'lr-find: suggested LR'."""
    head, dot, tail = key.rpartition(".")
    if dot and "_" not in head and "." not in head:
        return f"{head}: {words(tail)}"
    return " ".join(WORDS.get(part, part) for part in re.split(r"_+", key) if part)


def sci(value: float) -> str:
    """Scientific notation with up to 3 significant digits: 0.00316 -> '3.16e-3', 0.1 -> '1e-1'."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def number(value: Any, key: str = "") -> str:
    """`value` as a person wants to read it, given the key it is reported under."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(number(v, key) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={number(v, str(k))}" for k, v in value.items())
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    shown = kind(key)
    if shown == "percent" and 0.0 <= value <= 1.0:
        return f"{value * 100:.1f}%".replace(".0%", "%")
    if shown == "lr":
        return sci(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.{SIGNIFICANT}g}"


SAFE_NAME = 100  # characters of a folder name made from a name (file systems allow 255 bytes per path part)


def safe_name(name: str) -> str:
    """A name as a file name: letters, digits and -_. kept, anything else a dash; "run" for a name of dots only
    (never `..`); a name longer than SAFE_NAME characters is cut, with a short hash of the whole so that two long
    names stay apart."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    if not safe.strip("."):
        return "run"
    if len(safe) > SAFE_NAME:
        import hashlib

        safe = f"{safe[: SAFE_NAME - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats become null, numpy/torch scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def recipe_yaml(recipe: dict[str, Any]) -> str:
    """A recipe as YAML for people to read and re-run: floats without binary noise
    (0.09999999999999999 -> 0.1; 12 significant digits keep every value a search could tell apart)."""
    import yaml

    def tidy(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tidy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [tidy(v) for v in value]
        return float(f"{value:.12g}") if isinstance(value, float) else value

    return yaml.safe_dump(tidy(jsonable(recipe)), sort_keys=False)

"""Editing a recipe file for the user: `nndiag lr-find --apply` writes the recipe with the suggested
learning rate, keeping the user's own file (and its comments) where its `lr:` can be edited in place.
"""

from __future__ import annotations

import re
from typing import Any

from nndiag.config.recipe import parse_recipe
from nndiag.formatting import recipe_yaml


def apply_lr(recipe: Any, lr: float, original_text: str | None = None) -> str:
    """The recipe as YAML text with optim.lr = `lr`. Keeps the user's file (and its comments) when the
    recipe came unchanged from it and its `lr:` can be edited in place; else the resolved recipe."""
    import yaml

    lr = round_lr(lr)
    target = recipe.with_overrides({"optim.lr": lr})
    header = f"# optim.lr = {yaml_number(lr)}, suggested by `nndiag lr-find`\n"
    if original_text is not None:
        edited = _edit_lr(original_text, lr)
        if edited is not None:
            try:
                if parse_recipe(yaml.safe_load(edited), source=recipe.source) == target:
                    return header + edited
            except Exception:  # noqa: BLE001 - any failure means: fall back to the resolved recipe
                pass
    return header + "# (the resolved recipe; comments of the original are not kept)\n" + recipe_yaml(target.to_dict())


def round_lr(lr: float) -> float:
    """Three significant digits: an LR is never known better than that."""
    return float(f"{lr:.3g}")


def yaml_number(value: float) -> str:
    """A float as YAML 1.1 reads it back as a float (1.00e-05, not 1e-05)."""
    return repr(value) if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def _edit_lr(text: str, lr: float) -> str | None:
    """Replace the `lr:` value of the top-level `optim:` section (flow or block style), or None."""
    lines = text.splitlines(keepends=True)
    value = yaml_number(lr)
    for i, line in enumerate(lines):
        if re.match(r"optim\s*:\s*\{", line):
            new, count = re.subn(r"(\blr\s*:\s*)[^,}\s]+", lambda m: m.group(1) + value, line, count=1)
            if count:
                lines[i] = new
                return "".join(lines)
            return None
        if re.match(r"optim\s*:\s*(#.*)?$", line):
            for j in range(i + 1, len(lines)):
                if lines[j].strip() and not lines[j][0].isspace():
                    return None  # the next top-level key: no lr in the section
                m = re.match(r"(\s+lr\s*:\s*)([^#\s]+)(.*)", lines[j], flags=re.S)
                if m:
                    lines[j] = m.group(1) + value + m.group(3)
                    return "".join(lines)
            return None
    return None

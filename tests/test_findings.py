"""Advice in its reader's words (nndiag.findings.addressed): a recipe's user reads recipe keys and CLI flags, someone
who called nndiag on their own objects (the API, nndiag.watch, the callbacks) reads the arguments of their own code.
Every piece of advice the package can give is checked: none names a recipe key, a flag or a command in Python."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import REPO

from nndiag.findings import PYTHON_WORDS, Verdict, addressed, audience_of

RECIPE_WORDS = re.compile(r"\b(optim|train|data|model|schedule|search)\.[a-z_]+(?![a-z_]*\()|(?<![\w-])--[a-z]|`nndiag [a-z]")
PACKAGE = REPO / "nndiag"
FOR_PYTHON = [  # the diagnostics a Python user can meet on their own objects (search needs a recipe), and the root causes
    *(PACKAGE / "diagnostics").glob("*.py"),
    PACKAGE / "diagnosis" / "root_cause.py",
]
RECIPE_ONLY = {"search.py", "search_study.py", "search_workers.py", "curve_logs.py"}


def test_a_recipe_user_reads_the_recipe_and_a_python_user_reads_python():
    advice = "Lower optim.lr by 10-100x, or run `nndiag lr-find`; clip gradients (train.grad_clip) if spikes persist."
    assert addressed(advice, "recipe") == advice
    python = addressed(advice, "python")
    assert python == (
        "Lower your optimizer's lr= by 10-100x, or run `nndiag.lr_find`; clip gradients (torch.nn.utils.clip_grad_norm_) if spikes persist."
    )
    assert addressed(python, "python") == python  # idempotent: a Result stamped twice reads the same
    assert addressed("use more --steps or --batches-per-lr 8", "python") == "use more steps= or batches_per_lr=8"
    assert addressed("give the expected value (--expected, or expected= in Python).", "python") == "give the expected value (expected=)."
    with pytest.raises(ValueError):
        addressed(advice, "klingon")


def test_the_audience_follows_the_source_and_a_verdict_is_addressed_in_place():
    assert audience_of("python") == "python" and audience_of("recipes/quickstart.yaml") == "recipe" and audience_of(None) == "recipe"
    verdict = Verdict()
    verdict.add("plateau", "warn", "stuck", "Raise optim.lr (or run `nndiag lr-find`).")
    assert verdict.address("python") is verdict and verdict.findings[0].advice == "Raise your optimizer's lr= (or run `nndiag.lr_find`)."


def _advice_texts() -> list[tuple[str, str]]:
    """(where, text) of every literal piece of advice: the 4th argument of each Verdict.add (and of lr-find's Doubt),
    every name holding advice, what every *advice* function returns, and every root cause's fix."""
    found = []
    for path in FOR_PYTHON:
        if path.name in RECIPE_ONLY:
            continue
        tree = ast.parse(path.read_text())
        parts: list[ast.AST] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add" and len(node.args) >= 4:
                if "verdict" in ast.unparse(node.func.value).lower():
                    parts.append(node.args[3])
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Rule" and len(node.args) >= 5:
                parts.append(node.args[4])
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Doubt" and len(node.args) >= 2:
                parts.append(node.args[1])  # lr-find's unreliable-suggestion finding in the making: (message, advice, ...)
            elif isinstance(node, ast.Assign) and any("advice" in ast.unparse(t).lower() for t in node.targets):
                parts.append(node.value)
            elif isinstance(node, ast.AugAssign) and "advice" in ast.unparse(node.target).lower():
                parts.append(node.value)
            elif isinstance(node, ast.FunctionDef) and "advice" in node.name:
                parts += [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
        for part in parts:
            for leaf in ast.walk(part):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    found.append((f"{path.relative_to(REPO)}:{leaf.lineno}", leaf.value))
    return found


def test_no_advice_names_a_recipe_key_a_flag_or_a_command_for_a_python_user():
    texts = _advice_texts()
    assert len(texts) > 100 and any("optim.lr" in t for _, t in texts)  # the scan sees the advice
    left = [(where, addressed(text, "python")) for where, text in texts if RECIPE_WORDS.search(addressed(text, "python"))]
    assert not left, "advice a Python user would read in recipe words (add the phrase to findings.PYTHON_WORDS):\n" + "\n".join(
        f"{where}: {text}" for where, text in left
    )


def test_every_phrase_of_the_vocabulary_is_used():
    texts = " ".join(t for _, t in _advice_texts()) + " " + (PACKAGE / "codes.py").read_text()
    unused = [recipe for recipe, _ in PYTHON_WORDS if recipe not in texts]
    assert not unused, f"PYTHON_WORDS phrases no advice uses: {unused}"

"""The registry of finding codes (nndiag.codes) is the one source of truth: every code the diagnostics
raise is in it with the severities they use, every registered code is raised somewhere, every
threshold a rule quotes is the live module constant, and `nndiag explain` shows it all."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

import pytest
from conftest import REPO

from nndiag import codes

PACKAGE = REPO / "nndiag"


def _raised() -> dict[str, set[str]]:
    """code -> the literal severities it is raised with, from every `.add("code", "severity", ...)` in the package."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add"
                and len(node.args) >= 2
                and "verdict" in ast.unparse(node.func.value).lower()
            ):  # Verdict.add, not e.g. a session's add
                code, severity = node.args[0], node.args[1]
                if isinstance(code, ast.Constant) and isinstance(code.value, str) and re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", code.value):
                    found.setdefault(code.value, set())
                    if isinstance(severity, ast.Constant):
                        found[code.value].add(severity.value)
                    elif isinstance(severity, ast.IfExp):  # "fail" if ... else "warn"
                        found[code.value] |= {severity.body.value, severity.orelse.value}
    return found


def test_every_raised_code_is_registered_with_the_severities_it_is_raised_with():
    raised = _raised()
    assert set(raised) <= set(codes.REGISTRY), f"unregistered: {set(raised) - set(codes.REGISTRY)}"
    for code, severities in raised.items():
        assert severities <= set(codes.severities(code)), f"{code} is raised as {severities}, registered as {codes.REGISTRY[code].severity}"


def test_every_registered_code_is_raised_somewhere():
    assert set(codes.REGISTRY) == set(_raised())


def test_every_entry_is_complete_and_every_threshold_is_the_live_constant():
    for code, entry in codes.REGISTRY.items():
        assert entry.meaning and entry.rule and entry.source and entry.advice and entry.commands, code
        for name, value in codes.thresholds(code).items():
            module, constant = name.split(".")
            live = getattr(importlib.import_module(f"nndiag.{codes.MODULES[module][:-3].replace('/', '.')}"), constant)
            assert value == pytest.approx(live), f"{code}: {name} reads {value}, the module has {live}"
        assert "{" not in entry.render(entry.rule), f"{code}: a placeholder was not filled"


def test_explain_shows_meaning_rule_thresholds_source_and_advice(cli):
    result = cli("explain", "dead-relu")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for part in ("dead-relu", "probe", "never fire", "0.4", "DEAD_FRACTION = 0.4", "CS231n", "Kaiming"):
        assert part in text, part


def test_explain_without_a_code_lists_every_code(cli):
    text = cli("explain").stdout
    assert all(code in text for code in codes.REGISTRY)


def test_an_unknown_code_exits_2_and_suggests_the_nearest(cli):
    result = cli("explain", "dead-reul")
    assert result.exit_code == 2 and "dead-relu" in result.stderr and "Traceback" not in result.output


def test_explain_starts_without_torch():
    code = "import sys; from nndiag import codes; [codes.thresholds(c) for c in codes.REGISTRY]; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_docs_code_tables_are_generated_from_the_registry(tmp_path):
    from tools import docgen

    page = tmp_path / "docs" / "probe.md"
    page.parent.mkdir()
    page.write_text("# probe\n\n<!-- codes:probe -->\nstale\n<!-- /codes -->\n\nmore text\n")
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert docgen.main(["--root", str(tmp_path)]) == 0 and docgen.main(["--check", "--root", str(tmp_path)]) == 0
    text = page.read_text()
    assert "| `dead-relu` |" in text and "0.4" in text and text.endswith("more text\n") and "stale" not in text


def test_the_repositorys_docs_match_the_registry():
    from tools import docgen

    assert docgen.main(["--check", "--root", str(REPO)]) == 0


def test_no_text_users_see_cites_a_file_that_is_not_in_the_repository():
    """`nndiag explain` and the docstrings (help()) may point at files, but only at files the repository has."""
    import re

    cited = set()
    for entry in codes.REGISTRY.values():
        for text in (entry.meaning, entry.rule, entry.source, entry.advice):
            cited |= set(re.findall(r"[\w./-]+/[\w.-]+\.(?:md|py|csv|yaml)\b|\bDESIGN\.md\b|\bSTYLE\.md\b", text))
    for path in (REPO / "nndiag").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "DESIGN.md" not in source and "shared/" not in source, f"{path} cites a file users do not have"
    missing = sorted(c for c in cited if not (REPO / c).exists())
    assert not missing, f"explain texts cite files that are not in the repository: {missing}"
    assert any("benchmarks/results" in c for c in cited)  # the check reads real citations

"""The package's layers: every unit (a subpackage, or a module at the top of nndiag/) says in its docstring
what it may import ("May import: ..."), and its modules import nothing else of nndiag, not even inside a
function. The declarations form a layer order (no unit depends on itself through others), and no module
imports another that imports it back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nndiag"
MAY_IMPORT = re.compile(r"May import: (.*?)(?:\n\n|\Z)", re.S)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """nndiag.training.engine -> training; nndiag.api -> api; nndiag -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _units() -> dict[str, Path]:
    units = {p.parent.name: p for p in PACKAGE.glob("*/__init__.py")}
    units.update({p.stem: p for p in PACKAGE.glob("*.py")})
    return units


def declared() -> dict[str, set[str]]:
    """unit -> the units its docstring says it may import."""
    found = {}
    for unit, path in _units().items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        match = MAY_IMPORT.search(doc)
        assert match, f"{path.relative_to(PACKAGE.parent)}: its docstring does not say what it may import ('May import: ...')"
        found[unit] = set(re.findall(r"nndiag\.(\w+)", match.group(1)))
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of nndiag in a file, at any depth (function-level imports count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "nndiag":
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]  # a name or a submodule: trimmed to a module later
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nndiag"]
    return out


def _module_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_is_one_its_unit_declares():
    allowed = declared()
    wrong = []
    for path in _module_files():
        me = _unit(_module_name(path))
        for line, target in imports(path):
            unit = _unit(target)
            unit = unit if unit in allowed else "__init__"  # `from nndiag import BadInput`: the package's face
            if unit != me and unit not in allowed[me]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}, which {me} does not declare")
    assert not wrong, "\n".join(wrong)


def test_imports_inside_the_package_are_absolute():
    """A relative import (`from ..training import x`) would slip past the checks above, which read absolute ones."""
    relative = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in _module_files()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, relative


def test_the_declared_units_form_layers():
    """No unit may depend on itself through others: the declarations have an order (lowest first)."""
    allowed = declared()
    unknown = {u: deps - set(allowed) for u, deps in allowed.items() if deps - set(allowed)}
    assert not unknown, f"declared imports of units that do not exist: {unknown}"
    order, left = [], dict(allowed)
    while left:
        ready = [u for u, deps in left.items() if deps - {u} <= set(order)]
        assert ready, f"a circle among the declared imports of {sorted(left)}"
        order += sorted(ready)
        for u in ready:
            del left[u]
    assert order.index("errors") < order.index("result") < order.index("diagnostics") < order.index("api") < order.index("cli")


def test_no_module_imports_one_that_imports_it_back():
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _module_files()}
    for path in _module_files():
        me = _module_name(path)
        targets = set()
        for _, target in imports(path):
            while target not in names and "." in target:  # nndiag.training.engine.rng_kept -> the module
                target = target.rsplit(".", 1)[0]
            if target in names and target != me:
                targets.add(target)
        graph[me] = targets
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            pytest.fail("import circle: " + " -> ".join(trail[trail.index(node) :] + [node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_a_stray_import_is_caught(tmp_path):
    """The checker itself: a module importing upward is reported."""
    stray = tmp_path / "m.py"
    stray.write_text("def f():\n    from nndiag.cli import app\n    import nndiag.api\n")
    assert [t for _, t in imports(stray)] == ["nndiag.cli.app", "nndiag.api"]
    assert "cli" not in declared()["diagnostics"] and "api" not in declared()["training"]

"""Generated parts of the docs: tables and copies that come from the code, so they cannot drift.

A Markdown file marks where a generated part goes; everything between the markers is replaced:

    <!-- codes:probe -->              one command's finding codes: code, severity, rule with its live thresholds, source, advice
    <!-- /codes -->
    <!-- codes:all -->                every code in one line each: command, code, severity, meaning
    <!-- /codes -->
    <!-- flags:lr-find -->            one command's arguments and options, from the Typer app (name, default, help)
    <!-- /flags -->
    <!-- keys:recipe -->              every recipe key: path, default and the field's comment in nndiag/config/recipe.py
    <!-- /keys -->
    <!-- builtins:data -->            the built-in datasets (or builtins:models): name, what, args with defaults
    <!-- /builtins -->
    <!-- recipes:bundled -->          the bundled recipes: name, what it is for, the command that runs it
    <!-- /recipes -->
    <!-- include:benchmarks/results/probe_overhead.md -->   a file of the repository, its headings one level down
    <!-- /include -->
    <!-- init:my-recipe.yaml -->      the starter recipe `nndiag init my-recipe.yaml` writes (every key, each with a comment)
    <!-- /init -->
    <!-- causes:all -->               the root-cause rules (nndiag/diagnosis/root_cause.py), in precedence order
    <!-- /causes -->
    <!-- modules:nndiag -->           every module of the package, unit by unit: the first sentence of its docstring,
    <!-- /modules -->                 and what each unit may import (the "May import:" line tests/test_layers.py checks)

    python -m tools.docgen            rewrite the marked parts of README.md and docs/**/*.md
    python -m tools.docgen --check    exit 1 and name the files whose parts differ from the code (a test runs this)

Codes, flags and bundled recipes import nothing heavy; the data and model tables import torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Callable

from nndiag import codes

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("codes", "flags", "keys", "builtins", "recipes", "include", "init", "modules", "causes")
BLOCK = re.compile(r"(<!-- (?P<kind>" + "|".join(KINDS) + r"):(?P<what>[^ ]+) -->\n)(?P<body>.*?)(<!-- /(?P=kind) -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- finding codes (nndiag.codes) ------------------------------------------------------------------


def command_table(command: str) -> str:
    """One command's codes with their rules at the thresholds in use now."""
    lines = ["| code | severity | when it fires | source | what to do |", "|---|---|---|---|---|"]
    for name in codes.codes_by_command()[command]:
        entry = codes.REGISTRY[name]
        lines.append(
            f"| `{name}` | {_cell(entry.render(entry.severity))} | {_cell(entry.render(entry.rule))} | "
            f"{_cell(entry.render(entry.source))} | {_cell(entry.render(entry.advice))} |"
        )
    return "\n".join(lines) + "\n"


def all_codes_table() -> str:
    lines = ["| command | code | severity | meaning |", "|---|---|---|---|"]
    for command, names in codes.codes_by_command().items():
        for name in names:
            lines.append(f"| {command} | `{name}` | {'/'.join(codes.severities(name))} | {_cell(codes.REGISTRY[name].meaning)} |")
    return "\n".join(lines) + "\n"


def codes_table(what: str) -> str:
    if what == "all":
        return all_codes_table()
    if what not in codes.codes_by_command():
        raise ValueError(f"<!-- codes:{what} -->: no such command; expected all or one of {', '.join(codes.codes_by_command())}")
    return command_table(what)


# -- command-line flags (the Typer app) -------------------------------------------------------------


def commands() -> dict[str, Any]:
    """The click commands behind `nndiag`, by name."""
    import typer.main

    from nndiag.cli import app

    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _flag_name(param: Any) -> str:
    """As `--help` shows it: the option and its metavar (nndiag.cli.Command gives every option one)."""
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}{' ...' if param.nargs == -1 else ''}`"
    names = " / ".join([*param.opts, *param.secondary_opts])
    value = "" if param.is_flag else " " + (param.metavar or param.opts[0].lstrip("-").upper())
    return f"`{names}{value}`" + (" (repeatable)" if param.multiple else "")


def _flag_default(param: Any) -> str:
    default = param.default
    if param.param_type_name == "argument":
        return "—" if param.required or default is None else f"`{default}`"
    if param.is_flag and param.secondary_opts:
        return f"`{(param.opts if default else param.secondary_opts)[0]}`"
    if param.is_flag:
        return "off"
    if default is None or default == [] or default == ():
        return "—"
    return f"`{_yaml_value(default)}`"


def flags_table(command: str) -> str:
    """One command's arguments and options: name, default and help, as `nndiag COMMAND --help` gives them."""
    found = commands()
    if command not in found:
        raise ValueError(f"<!-- flags:{command} -->: no such command; expected one of {', '.join(found)}")
    lines = ["| argument or option | default | meaning |", "|---|---|---|"]
    for param in found[command].params:
        if getattr(param, "hidden", False):
            continue
        lines.append(f"| {_flag_name(param)} | {_flag_default(param)} | {_cell(param.help or '')} |")
    return "\n".join(lines) + "\n"


# -- recipe keys (the dataclasses of nndiag/config/recipe.py and their field comments) ----------------------


def _field_comments(module: Any) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment at the end of the field's line in the module's source."""
    source = inspect.getsource(module)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    lines = [n for n in range(item.lineno, (item.end_lineno or item.lineno) + 1) if n in comments]
                    if lines:  # the comment of the field's line (the formatter may have wrapped it)
                        found[(node.name, item.target.id)] = comments[lines[-1]]
    return found


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return re.sub(r"e([+-])0(\d)", r"e\1\2", str(value))  # 1e-08 -> 1e-8


def recipe_keys() -> list[tuple[str, str, str]]:
    """(key path, default, meaning) for every key of a recipe, in the order of the dataclasses."""
    from nndiag.config import recipe

    comments = _field_comments(recipe)
    rows: list[tuple[str, str, str]] = []

    def walk(defaults: Any, prefix: str) -> None:  # defaults: the section as a recipe without the key has it
        cls = type(defaults)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            path, tp, default = prefix + f.name, hints[f.name], getattr(defaults, f.name)
            comment = comments.get((cls.__name__, f.name), "")
            if dataclasses.is_dataclass(tp):
                if comment:
                    rows.append((path, "", comment))
                walk(default, path + ".")
                continue
            if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                rows.append((path + ".<key path>", "`{}`", comment))
                walk(typing.get_args(tp)[1](), path + ".<key path>.")
                continue
            rows.append((path, f"`{_yaml_value(default)}`", comment))

    walk(recipe.Recipe(), "")
    return rows


def keys_table(what: str) -> str:
    if what != "recipe":
        raise ValueError(f"<!-- keys:{what} -->: expected keys:recipe")
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{path}` | {default} | {_cell(meaning)} |" for path, default, meaning in recipe_keys()]
    return "\n".join(lines) + "\n"


# -- built-in data and models ------------------------------------------------------------------------


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(getattr(fn, "func", fn)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _args(fn: Callable[..., Any], skip: tuple[str, ...] = ("input_shape", "num_outputs")) -> str:
    parts = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip:
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"any `{p.name}` key")
        else:
            parts.append(f"`{p.name}: {_yaml_value(p.default)}`")
    return ", ".join(parts)


def builtins_table(what: str) -> str:
    if what == "data":
        from nndiag.zoo.datasets import BUILTINS

        header = "| `data.name` | what | `data.args` (defaults) |"
    elif what == "models":
        from nndiag.zoo.models import BUILTINS  # type: ignore[no-redef]

        header = "| `model.name` | what | `model.args` (defaults) |"
    else:
        raise ValueError(f"<!-- builtins:{what} -->: expected builtins:data or builtins:models")
    lines = [header, "|---|---|---|"]
    lines += [f"| `{name}` | {_cell(_summary(fn))} | {_cell(_args(fn))} |" for name, fn in BUILTINS.items()]
    return "\n".join(lines) + "\n"


# -- bundled recipes, included files -----------------------------------------------------------------


def recipes_table(what: str) -> str:
    if what != "bundled":
        raise ValueError(f"<!-- recipes:{what} -->: expected recipes:bundled")
    from nndiag.config.library import bundled

    lines = ["| recipe | what it is for | run it with |", "|---|---|---|"]
    lines += [f"| `{r.name}` | {_cell(r.description)} | `{r.command}` |" for r in bundled()]
    return "\n".join(lines) + "\n"


FENCED = {".yml": "yaml", ".yaml": "yaml", ".toml": "toml", ".txt": "text"}  # included as a code block, not as Markdown


def include(path: str, root: Path) -> str:
    """A file of the repository as it is: Markdown with each heading one level down (it sits under the
    page's own), a YAML/TOML/text file as a code block."""
    file = root / path
    if not file.is_file():
        raise ValueError(f"<!-- include:{path} -->: no such file under {root}")
    text = file.read_text(encoding="utf-8")
    text = text if text.endswith("\n") else text + "\n"
    if file.suffix == ".md":
        return re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.M)
    if file.suffix in FENCED:
        return f"```{FENCED[file.suffix]}\n{text}```\n"
    raise ValueError(f"<!-- include:{path} -->: can include {', '.join(['.md', *FENCED])} files")


def starter(path: str) -> str:
    """The recipe `nndiag init PATH` writes, as a YAML block."""
    from nndiag.config.library import init_files

    return "```yaml\n" + init_files(Path(path))[Path(path)] + "```\n"


def _first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).rstrip(":;.") + "."


def _may_import(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    match = re.search(r"May import: (.*?)(?:\n\n|\Z)", doc, re.S)
    return " ".join(match.group(1).split()) if match else "(not declared)"


def modules_table(what: str, root: Path = ROOT) -> str:
    """The package's map: one row per module, grouped by unit (a top-level module, or a subpackage), with what the
    unit may import. Units are listed in layer order (lowest first: a unit only imports those above it in the table)."""
    if what != "nndiag":
        raise ValueError(f"<!-- modules:{what} -->: expected modules:nndiag")
    package = root / "nndiag"
    units = {p.parent.name: p for p in package.glob("*/__init__.py")} | {p.stem: p for p in package.glob("*.py")}
    deps = {u: set(re.findall(r"nndiag\.(\w+)", _may_import(p))) for u, p in units.items()}
    order: list[str] = []
    while len(order) < len(units):
        ready = sorted(u for u in units if u not in order and deps[u] - {u} <= set(order))
        if not ready:
            raise ValueError("the units' declared imports have a circle (tests/test_layers.py says where)")
        order += ready
    lines = ["| module | what it holds | may import |", "|---|---|---|"]
    for unit in order:
        path = units[unit]
        if path.name == "__init__.py" and unit != "__init__":
            lines.append(f"| **`nndiag/{unit}/`** | {_cell(_first_sentence(path))} | {_cell(_may_import(path))} |")
            for module in sorted(path.parent.glob("*.py")):
                if module.name != "__init__.py":
                    lines.append(f"| &nbsp;&nbsp;`{module.name}` | {_cell(_first_sentence(module))} | |")
        else:
            name = f"nndiag/{path.name}"
            lines.append(f"| **`{name}`** | {_cell(_first_sentence(path))} | {_cell(_may_import(path))} |")
    return "\n".join(lines) + "\n"


def causes_table(what: str) -> str:
    """The root-cause rules in precedence order: id, what it is, the findings that establish it, what it explains, its fix.
    The symptom groups the rules share are named once under the table."""
    if what != "all":
        raise ValueError(f"<!-- causes:{what} -->: expected causes:all")
    from nndiag.diagnosis import root_cause as rc

    groups = {
        "a loss that does not move": rc.NOT_MOVING,
        "divergence": rc.DIVERGING,
        "the loss's shape": rc.LR_SHAPED,
        "validation": rc.VALIDATION,
    }

    def explains(codes: tuple[str, ...]) -> str:
        if "*" in codes:
            return "everything"
        left, shown = list(codes), []
        for name, group in groups.items():
            if set(group) <= set(codes):
                shown.append(f"*{name}*")
                left = [c for c in left if c not in group]
        shown += [f"`{c}`" for c in dict.fromkeys(left)]
        return ", ".join(shown) or "—"

    lines = ["| # | `cause` | what it is | established by | explains | fix |", "|---:|---|---|---|---|---|"]
    for number, rule in enumerate(rc.RULES, 1):
        signs = ", ".join(
            f"`{s.code}`"
            + (" (fail)" if s.severity == "fail" else "")
            + "".join(f" with `{k}`" for k in s.when)
            + "".join(f" without `{k}`" for k in s.unless)
            for s in rule.established_by
        )
        lines.append(
            f"| {number} | `{rule.cause}` | {_cell(rule.title)} | {signs} | {explains(rule.explains)} | {_cell(rule.fix_text())} |"
        )
    lines += [
        "",
        "Symptom groups: " + "; ".join(f"*{name}*: " + ", ".join(f"`{c}`" for c in group) for name, group in groups.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def part(kind: str, what: str, root: Path = ROOT) -> str:
    """The generated text of one marked block."""
    if kind == "include":
        return include(what, root)
    if kind == "init":
        return starter(what)
    if kind == "modules":
        return modules_table(what, root)
    if kind == "causes":
        return causes_table(what)
    return {"codes": codes_table, "flags": flags_table, "keys": keys_table, "builtins": builtins_table, "recipes": recipes_table}[kind](
        what
    )


def table(what: str) -> str:
    """The codes table for `<!-- codes:WHAT -->` (kept for callers of the first version)."""
    return codes_table(what)


def generated(text: str, root: Path = ROOT) -> str:
    """`text` with every marked block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + part(m.group("kind"), m.group("what"), root) + m.group(5), text)


def files(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a generated part differs from the code")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    stale = []
    for path in files(args.root):
        text = path.read_text(encoding="utf-8")
        new = generated(text, args.root)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(
            "generated parts of the docs differ from the code (run python -m tools.docgen): " + ", ".join(map(str, stale)), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

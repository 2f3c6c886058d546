"""Generated parts of the docs: the finding-code tables, from the registry (nndiag.codes).

A Markdown file marks where a table goes; everything between the markers is replaced:

    <!-- codes:probe -->            one command's codes: code, severity, rule with its thresholds, source, advice
    <!-- /codes -->
    <!-- codes:all -->              every code in one line each: command, code, severity, meaning
    <!-- /codes -->

    python -m nndiag.docgen            rewrite the marked tables in README.md and docs/**/*.md
    python -m nndiag.docgen --check    exit 1 and name the files whose tables differ from the registry (a test runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nndiag import codes

BLOCK = re.compile(r"(<!-- codes:(?P<what>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /codes -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def command_table(command: str) -> str:
    """One command's codes with their rules at the thresholds in use now."""
    lines = ["| code | severity | when it fires | source | what to do |", "|---|---|---|---|---|"]
    for name in codes.codes_by_command()[command]:
        entry = codes.REGISTRY[name]
        lines.append(f"| `{name}` | {_cell(entry.render(entry.severity))} | {_cell(entry.render(entry.rule))} | "
                     f"{_cell(entry.render(entry.source))} | {_cell(entry.render(entry.advice))} |")
    return "\n".join(lines) + "\n"


def all_codes_table() -> str:
    lines = ["| command | code | severity | meaning |", "|---|---|---|---|"]
    for command, names in codes.codes_by_command().items():
        for name in names:
            lines.append(f"| {command} | `{name}` | {'/'.join(codes.severities(name))} | {_cell(codes.REGISTRY[name].meaning)} |")
    return "\n".join(lines) + "\n"


def table(what: str) -> str:
    if what == "all":
        return all_codes_table()
    if what not in codes.codes_by_command():
        raise ValueError(f"<!-- codes:{what} -->: no such command; expected all or one of {', '.join(codes.codes_by_command())}")
    return command_table(what)


def generated(text: str) -> str:
    """`text` with every marked block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group("what")) + m.group(4), text)


def files(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a table differs from the registry")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    stale = []
    for path in files(args.root):
        text = path.read_text(encoding="utf-8")
        new = generated(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("finding-code tables differ from the registry (run python -m nndiag.docgen): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

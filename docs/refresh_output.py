"""Refresh the output shown in the docs' ```console blocks: run each block's `$ ` lines as a new user
would (in an empty folder with the repository's recipes/ beside it, 100 columns, no GPU visible) and
replace the lines under each command with what it printed, stdout and stderr together.

    python docs/refresh_output.py                 # every page
    python docs/refresh_output.py docs/commands/check-loss.md

Only blocks marked `<!-- run ... -->` are refreshed; tests/test_docs_examples.py runs the same commands
and checks their exit codes and the text each marker promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- run[^\n]*-->\n```console\n)(.*?)(^```$)", re.S | re.M)


def run(command: str, folder: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNDIAG_")}
    env.update(COLUMNS="100", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), TERM="dumb")
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nndiag").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nndiag "$@"\n')
    (bin_dir / "nndiag").chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout


def refresh(text: str) -> str:
    def block(m: re.Match[str]) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "recipes").symlink_to(ROOT / "recipes")
            lines = []
            for command in [line[2:] for line in m.group(2).splitlines() if line.startswith("$ ")]:
                lines += [f"$ {command}", *run(command, folder).rstrip("\n").splitlines()]
        return m.group(1) + "\n".join(lines) + "\n" + m.group(3)

    return BLOCK.sub(block, text)


def main(paths: list[str]) -> None:
    for path in [Path(p) for p in paths] or [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        new = refresh(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"refreshed {path}")


if __name__ == "__main__":
    main(sys.argv[1:])

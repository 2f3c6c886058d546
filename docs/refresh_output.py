"""Refresh the output shown in the docs' ```console blocks: run each block's `$ ` lines as a new user
would (in an empty folder with the repository's recipes/ beside it, after the block's `setup`, 100
columns, no GPU visible) and replace the lines under each command with what it printed, stdout and
stderr together.

    python docs/refresh_output.py                 # every page
    python docs/refresh_output.py docs/commands/check-loss.md

Only blocks marked `<!-- run ... -->` are refreshed; tests/test_docs_examples.py runs the same commands
(and owns the setups) and checks their exit codes and the text each marker promises.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_docs_examples as examples  # noqa: E402  (the setups and the environment the tests use)

BLOCK = re.compile(r"(<!-- run(?P<options>[^\n]*)-->\n```console\n)(?P<body>.*?)(?P<end>^```$)", re.S | re.M)


def refresh(text: str) -> str:
    def block(m: re.Match[str]) -> str:
        options = dict(t.partition("=")[::2] for t in shlex.split(m.group("options").lstrip(":")))
        with tempfile.TemporaryDirectory() as tmp:
            folder = examples._folder(Path(tmp))
            examples._setup(options.get("setup", "x"), folder)
            env = examples._env(folder)
            env.pop("NNDIAG_RUNS")  # show run folders as a user sees them: runs/... under the working directory
            lines = []
            for command in [line[2:] for line in m.group("body").splitlines() if line.startswith("$ ")]:
                done = subprocess.run(
                    ["bash", "-c", command], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                lines += [f"$ {command}", *(line.rstrip() for line in done.stdout.rstrip("\n").splitlines())]
        return m.group(1) + "\n".join(lines) + "\n" + m.group("end")

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

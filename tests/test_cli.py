"""The command line: start-up cost, the JSON contract, exit codes, the run folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import SPIRAL_MLP, recipe_dict


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from nndiag.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for command in ('check-loss', 'overfit-small'):\n"
        "    assert command in result.output, command\n"
        "bad = [m for m in ('torch', 'pandas', 'matplotlib', 'optuna') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


def test_every_command_help_is_cheap():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from nndiag.cli import app\n"
        "names = [c.name for c in app.registered_commands]\n"
        "for name in names:\n"
        "    result = CliRunner().invoke(app, [name, '--help'])\n"
        "    assert result.exit_code == 0, (name, result.output)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version_matches_the_package_and_pyproject(cli):
    import re

    from conftest import REPO

    import nndiag

    result = cli("--version")
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert result.exit_code == 0 and result.stdout == f"nndiag {nndiag.__version__}\n" and nndiag.__version__ == declared


def _help(cli, *args):
    import os

    os.environ["COLUMNS"] = "100"  # Rich reads the width when the help is drawn
    try:
        result = cli(*args, "--help")
    finally:
        del os.environ["COLUMNS"]
    assert result.exit_code == 0, result.output
    return result.stdout


def test_help_shows_what_to_type_not_python_types(cli):
    from nndiag.cli import app

    top = _help(cli)
    assert "3 a crash" in top and "130 interrupted" in top and "--version" in top  # every exit code, not only 0-2
    for command in [c.name for c in app.registered_commands]:
        text = _help(cli, command)
        assert not re.search(r"<(bool|str|int|float|path|list\[str\]|int range|float range)>", text), (command, text)
        assert "{" not in text.split("\n", 3)[1], f"{command}: usage shows a Python-style placeholder"
    lr = _help(cli, "lr-find")
    assert "lr-find [OPTIONS] RECIPE" in lr
    assert re.search(r"--set\s+KEY=VALUE", lr) and re.search(r"--steps\s+N", lr) and re.search(r"--threads\s+N", lr)
    assert "[OPTIONS] FILES..." in _help(cli, "curves") and "[OPTIONS] [RECIPE]" in _help(cli, "probe")


def test_each_commands_out_describes_its_own_folder(cli):
    for command, folder in (
        ("check-loss", "check-loss-<timestamp>"),
        ("lr-find", "lr-find-<timestamp>"),
        ("babysit", "babysit-<timestamp>"),
        ("search", "search-journal.log"),
        ("curves", "runs/curves/curves-<timestamp>"),
    ):
        text = " ".join(_help(cli, command).replace("│", " ").split())
        start = text.index("--out ")
        out = text[start : text.index("--json", start)]
        assert folder in out.replace(" ", ""), (command, out)
        assert command == "curves" or "curves" not in out, f"{command}'s --out talks about curves: {out}"


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "nndiag", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check-loss" in out.stdout


def test_json_is_exactly_one_object_and_files_are_written(cli, write_recipe, tmp_path):
    out = tmp_path / "out"
    result = cli("overfit-small", write_recipe(recipe_dict(SPIRAL_MLP, **{"model.args.hidden": [64, 64]})), "--json", "--out", out)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert set(verdict) == {"command", "recipe", "status", "findings", "metrics", "outputs"}
    assert verdict["status"] == "pass" and verdict["findings"] == []
    assert (out / "overfit_small.csv").is_file() and (out / "recipe.yaml").is_file() and (out / "overfit_small.png").is_file()
    assert json.loads((out / "summary.json").read_text()) == verdict


def test_failing_verdict_exits_1_with_findings_in_json(cli, write_recipe):
    result = cli(
        "overfit-small", write_recipe(recipe_dict(SPIRAL_MLP, optim={"name": "sgd", "lr": 1e-8})), "--json", "--steps", "50", "--no-plots"
    )
    assert result.exit_code == 1
    finding = json.loads(result.stdout)["findings"][0]
    assert finding["code"] == "loss-not-decreasing" and set(finding) == {"code", "severity", "message", "advice", "evidence"}


def test_default_run_folder_and_human_output(cli, write_recipe, tmp_path):
    result = cli("check-loss", write_recipe(SPIRAL_MLP))
    assert result.exit_code == 0
    assert "PASS" in result.stdout and "initial loss" in result.stdout
    folders = list((tmp_path / "runs" / "spiral-mlp").glob("check-loss-*"))
    assert len(folders) == 1 and (folders[0] / "check_loss.csv").is_file()


def test_device_and_seed_flags_override_the_recipe(cli, write_recipe):
    result = cli("check-loss", write_recipe(SPIRAL_MLP), "--device", "cpu", "--seed", "3", "--json")
    assert result.exit_code == 0
    bad = cli("check-loss", write_recipe(SPIRAL_MLP), "--device", "tpu")
    assert bad.exit_code == 2 and "device" in bad.stderr


def test_validate(cli, write_recipe):
    ok = cli("validate", write_recipe(SPIRAL_MLP))
    assert ok.exit_code == 0 and "valid" in ok.stdout and "parameters" in ok.stdout
    bad = cli("validate", write_recipe(recipe_dict(SPIRAL_MLP, **{"optim.lr": 0})))
    assert bad.exit_code == 2 and "optim.lr" in bad.stderr


def test_same_seed_same_csv(cli, write_recipe, tmp_path):
    path = write_recipe(SPIRAL_MLP)
    for name in ("a", "b"):
        assert cli("check-loss", path, "--out", tmp_path / name, "--json").exit_code == 0
    assert (tmp_path / "a" / "check_loss.csv").read_text() == (tmp_path / "b" / "check_loss.csv").read_text()

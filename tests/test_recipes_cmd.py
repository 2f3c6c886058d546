"""`nndiag recipes` (the bundled recipes) and `nndiag init` (a starter recipe for your own code)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import REPO

from nndiag.config import library as recipe_library
from nndiag.config.recipe import Recipe

BUNDLED_HERE = ("quickstart", "spiral-mlp", "digits-cnn", "mnist1d-cnn", "cifar10-resnet18")


def test_recipes_json_lists_every_bundled_recipe_with_purpose_and_command(cli):
    result = cli("recipes", "--json")
    assert result.exit_code == 0, result.output
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(BUNDLED_HERE) <= set(listed)
    assert {p.stem for p in (REPO / "recipes").glob("*.yaml")} == set(listed)
    for name, info in listed.items():
        assert info["description"] and info["description"][0].isupper(), name
        assert info["command"].startswith("nndiag ") and info["command"] in info["commands"], name
        assert f"recipes/{name}.yaml" in info["command"], f"{name}: its command must run this very file"
    assert listed["quickstart"]["command"] == "nndiag babysit recipes/quickstart.yaml"


def test_every_bundled_recipe_is_valid(cli):
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        result = cli("validate", path, "--no-build")
        assert result.exit_code == 0, f"{path.name}: {result.output}"


def test_recipes_table(cli):
    result = cli("recipes")
    assert result.exit_code == 0
    assert "quickstart" in result.stdout and "nndiag babysit recipes/spiral-mlp.yaml" in result.stdout


def test_describe_reads_the_opening_comment(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "# Mine: for testing. A second sentence.\n# more prose\n#   nndiag check-loss x.yaml   # step 1\n"
        "#   nndiag babysit x.yaml\n# later comment\nname: mine\n# not the header\n"
    )
    info = recipe_library.describe(path)
    assert info.description == "Mine: for testing."
    assert info.commands == ["nndiag check-loss x.yaml", "nndiag babysit x.yaml"]
    assert info.command == "nndiag babysit x.yaml"  # the one that runs the whole recipe


def test_recipes_folder_from_environment(cli, tmp_path, monkeypatch):
    (tmp_path / "own.yaml").write_text("# Own: a recipe of mine.\n#   nndiag check-loss own.yaml\nname: own\n")
    monkeypatch.setenv("NNDIAG_RECIPES", str(tmp_path))
    listed = json.loads(cli("recipes", "--json").stdout)
    assert [r["name"] for r in listed] == ["own"] and listed[0]["command"] == "nndiag check-loss own"  # own.yaml is not here
    monkeypatch.chdir(tmp_path)
    assert json.loads(cli("recipes", "--json").stdout)[0]["command"] == "nndiag check-loss own.yaml"  # from its folder it is


def test_recipes_from_an_empty_folder_suggest_commands_that_work_there(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed = {r["name"]: r for r in json.loads(cli("recipes", "--json").stdout)}
    assert listed["quickstart"]["command"] == "nndiag babysit quickstart"
    assert all("recipes/" not in c for r in listed.values() for c in r["commands"])
    table = cli("recipes").stdout
    assert "nndiag babysit quickstart" in table and "recipes/quickstart.yaml" not in table.replace(str(REPO), "")
    ran = cli("validate", listed["quickstart"]["command"].split()[-1], "--no-build")  # the bare name works from here
    assert ran.exit_code == 0, ran.output


def test_no_recipes_found_is_exit_2(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_library, "_candidates", lambda: [tmp_path / "nowhere"])
    result = cli("recipes")
    assert result.exit_code == 2 and "NNDIAG_RECIPES" in result.stderr


def test_init_with_targets_validates_and_passes_check_loss(cli, tmp_path):
    path = tmp_path / "proj" / "mine.yaml"
    result = cli("init", path, "--with-targets")
    assert result.exit_code == 0, result.output
    assert path.is_file() and (path.parent / "my_data.py").is_file() and (path.parent / "my_models.py").is_file()
    assert cli("validate", path).exit_code == 0
    check = cli("check-loss", path, "--json")
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["status"] == "pass"


def test_init_refuses_to_overwrite_without_force(cli, tmp_path):
    path = tmp_path / "mine.yaml"
    assert cli("init", path).exit_code == 0
    path.write_text("# edited by the user\n")
    result = cli("init", path, "--with-targets")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert path.read_text() == "# edited by the user\n" and not (tmp_path / "my_data.py").exists()  # nothing written
    assert cli("init", path, "--force").exit_code == 0 and "starter recipe" in path.read_text()


def test_init_without_targets_names_the_missing_module(cli, tmp_path):
    path = tmp_path / "mine.yaml"
    cli("init", path)
    result = cli("validate", path)
    assert result.exit_code == 2 and "my_data" in result.stderr


def test_init_into_a_folder_and_from_a_bundled_recipe(cli, tmp_path):
    assert cli("init", tmp_path / "newdir", "--from", "spiral-mlp").exit_code == 0
    copied = tmp_path / "newdir" / "recipe.yaml"
    text = copied.read_text()
    assert "\nname: newdir\n" in text and "recipes/spiral-mlp.yaml" not in text.split("name:")[0]
    assert text.startswith("# newdir: your copy of the bundled recipe `spiral-mlp`")
    assert cli("validate", copied, "--no-build").exit_code == 0
    bad = cli("init", tmp_path / "x.yaml", "--from", "no-such-recipe")
    assert bad.exit_code == 2 and "quickstart" in bad.stderr


def _keys(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    return {f"{prefix}{k}" for k in node} | {
        key for k, v in node.items() if k not in ("args", "space") for key in _keys(v, f"{prefix}{k}.")
    }


def test_starter_sets_every_recipe_key_each_with_a_comment(tmp_path):
    text = recipe_library.init_files(tmp_path / "s.yaml")[tmp_path / "s.yaml"]
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all("#" in line for line in body if ":" in line and not line.rstrip().endswith(":")), "one comment per key"
    schema = _keys(Recipe().to_dict()) - {"data.name", "model.name"}  # the alternatives to target, shown as comments
    assert _keys(yaml.safe_load(text)) == schema, "the starter must show every recipe key (update STARTER when recipe.py grows)"


def test_modules_import_no_torch():
    code = "import sys, nndiag.config.library, nndiag.diagnosis.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_a_recipes_folder_that_is_not_there_is_bad_input(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("NNDIAG_RECIPES", str(tmp_path / "typo"))
    result = cli("recipes")
    assert result.exit_code == 2 and "NNDIAG_RECIPES" in result.stderr


def test_init_from_quickstart_drops_what_only_held_for_the_bundled_copy(cli, tmp_path):
    assert cli("init", tmp_path / "mine.yaml", "--from", "quickstart").exit_code == 0
    text = (tmp_path / "mine.yaml").read_text()
    assert "\nname: mine\n" in text and "make demo" not in text and "nndiag babysit mine.yaml" in text.replace(str(tmp_path) + "/", "")


def test_a_bare_name_runs_the_bundled_recipe_and_says_which_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder, as a pip user starts
    result = cli("validate", "spiral-mlp", "--no-build")
    assert result.exit_code == 0 and str(REPO / "recipes" / "spiral-mlp.yaml") in result.stdout
    checked = cli("check-loss", "spiral-mlp", "--set", "device=cpu")
    assert checked.exit_code == 0 and "using the bundled recipe" in checked.stderr
    verdict = json.loads(cli("check-loss", "spiral-mlp", "--json", "--set", "device=cpu").stdout)
    assert verdict["recipe"].endswith("recipes/spiral-mlp.yaml")
    missing = cli("check-loss", "spiral")
    assert missing.exit_code == 2 and "spiral-mlp" in missing.stderr  # the names it could have meant


def test_a_bad_override_is_blamed_on_the_flag_not_the_file(cli):
    result = cli("validate", REPO / "recipes" / "quickstart.yaml", "--set", "optim.lr=-0.1", "--no-build")
    assert result.exit_code == 2 and "from --set optim.lr=-0.1" in result.stderr and "quickstart.yaml" not in result.stderr

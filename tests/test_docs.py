"""The docs stay true: the README is short and its links resolve; every command has a page with its
generated flag and code tables; every command, option, finding code and recipe key a user can use is
shown in an example; the generated parts of tools/docgen.py come from the code; and the behaviour the
docs promise about exit codes holds (train exits 1 on a failing probe finding; a model that cannot
score the data is bad input, exit 2; a crash mid-run is exit 3: tests/test_robustness.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO, SPIRAL_MLP, recipe_dict

from nndiag import codes
from tools import docgen

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
COMMON = {
    "--device",
    "--seed",
    "--set",
    "--out",
    "--json",
    "--no-plots",
    "--threads",
    "--progress",
    "--no-progress",
}  # documented once, on the codes page


def _code_lines() -> list[str]:
    lines = []
    for page in PAGES:
        for m in re.finditer(r"^```(?:bash|console|sh|shell|python)[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S):
            lines += m.group(1).replace("\\\n", " ").splitlines()
    return lines


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_every_command_has_a_page_with_its_flags_and_codes():
    pages = {p: p.read_text() for p in (REPO / "docs" / "commands").glob("*.md")}
    every_page = {p: p.read_text() for p in (REPO / "docs").rglob("*.md")}
    nav = (REPO / "mkdocs.yml").read_text()
    for name in docgen.commands():
        assert any(f"<!-- flags:{name} -->" in text for text in pages.values()), f"no page has <!-- flags:{name} -->"
    for command in codes.codes_by_command():
        if command != "train":  # train raises the curves codes: its page links there
            where = pages if command in docgen.commands() else every_page  # watch is a Python function: docs/loop.md
            assert any(f"<!-- codes:{command} -->" in text for text in where.values()), f"no page has <!-- codes:{command} -->"
    for page in pages:
        assert f"commands/{page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"


def test_every_command_and_option_is_shown_in_an_example():
    lines = _code_lines()
    missing = []
    for name, command in docgen.commands().items():
        used = [line for line in lines if re.search(rf"nndiag {name}\b", line)]
        if not used:
            missing.append(name)
        for param in command.params:
            for option in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if param.param_type_name == "option" and option not in COMMON:
                    if not any(re.search(rf"{re.escape(option)}(?![\w-])", line) for line in used):
                        missing.append(f"{name} {option}")
    for option in COMMON:
        if not any(re.search(rf"nndiag .*{re.escape(option)}(?![\w-])", line) for line in lines):
            missing.append(option)
    assert not missing, f"no example in README.md or docs/ shows: {missing}"


def test_every_recipe_key_is_in_the_starter_recipe_the_docs_show():
    starter = docgen.starter("my-recipe.yaml")
    assert "<!-- init:my-recipe.yaml -->" in (REPO / "docs" / "recipes.md").read_text()
    for path, _, meaning in docgen.recipe_keys():
        assert meaning, f"{path}: the field in nndiag/recipe.py has no comment"
        leaf = path.split(".")[-1]
        if leaf == "<key path>" or "<key path>." in path:  # search.space entries: shown by example keys
            continue
        assert re.search(rf"(^|[\s{{,]){re.escape(leaf)}:", starter, re.M), f"{path} has no example in the starter recipe"


def test_every_finding_code_has_its_rule_in_the_generated_tables():
    text = "\n".join(p.read_text() for p in PAGES)
    for code in codes.REGISTRY:
        assert f"| `{code}` |" in text, code


def test_the_generated_parts_come_from_the_code(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "notes.md").write_text("# r\n\n## old\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "<!-- flags:lr-find -->\nstale\n<!-- /flags -->\n<!-- keys:recipe -->\n<!-- /keys -->\n"
        "<!-- builtins:models -->\n<!-- /builtins -->\n<!-- include:notes.md -->\n<!-- /include -->\n"
        "<!-- recipes:bundled -->\n<!-- /recipes -->\n<!-- init:r.yaml -->\n<!-- /init -->\n"
    )
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert docgen.main(["--root", str(tmp_path)]) == 0 and docgen.main(["--check", "--root", str(tmp_path)]) == 0
    text = page.read_text()
    assert "| `--batches-per-lr N` | `4` |" in text and "stale" not in text  # the metavar --help shows
    assert "| `optim.lr` | `0.01` | learning rate" in text and "| `search.fine.epochs` | `10` |" in text
    assert "| `gru` |" in text and "`hidden: 64`" in text
    assert "### old" in text  # an included Markdown file's headings go one level down
    assert "| `quickstart` |" in text and "```yaml\n# r: a starter recipe" in text


def test_train_exits_1_on_a_failing_probe_finding(cli, write_recipe):
    saturating = recipe_dict(
        SPIRAL_MLP, **{"model.args": {"hidden": [64, 64, 64], "activation": "tanh", "init": "normal", "init_std": 3.0}, "train.epochs": 1}
    )
    path = write_recipe(saturating)
    without = cli("train", path, "--json", "--no-plots", "--max-steps", "4")
    probed = cli("train", path, "--json", "--no-plots", "--max-steps", "4", "--probe-every", "2")
    assert without.exit_code == 0, without.stdout
    verdict = json.loads(probed.stdout)
    assert probed.exit_code == 1 and verdict["status"] == "fail"
    assert any(f["severity"] == "fail" and f["code"] in codes.codes_by_command()["probe"] for f in verdict["findings"])


def test_a_forward_that_always_raises_is_bad_input(cli, write_recipe, tmp_path):
    (tmp_path / "broken.py").write_text(
        "from torch import nn\nclass Broken(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.layer = nn.Linear(2, 3)\n"
        "    def forward(self, x):\n        raise ZeroDivisionError('boom')\n"
    )
    result = cli("check-loss", write_recipe(recipe_dict(SPIRAL_MLP, model={"target": "broken:Broken"})), "--json")
    assert result.exit_code == 2 and "ZeroDivisionError" in result.stderr and "model" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output

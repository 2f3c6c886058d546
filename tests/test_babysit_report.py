"""The babysit report: report.md and one self-contained report.html from step outcomes."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from nndiag.diagnosis.report import flat_metrics, key_numbers, md_escape, write_report
from nndiag.diagnosis.run import Step, overall_status, stopping_step


def _png(path: Path, title: str) -> Path:
    from nndiag.output.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [3, 1, 0.5])
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def _verdict(folder: Path, command: str, status: str, findings=(), metrics=None, plot: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{command.replace('-', '_')}.csv"
    csv.write_text("step,loss\n0,2.3\n1,1.1\n")
    outputs = {"folder": str(folder), "csv": {csv.stem: str(csv)}, "summary": str(folder / "summary.json")}
    if plot:
        outputs["plots"] = [str(_png(folder / f"{csv.stem}.png", command))]
    return {
        "command": command,
        "recipe": "recipes/quickstart.yaml",
        "status": status,
        "findings": list(findings),
        "metrics": metrics or {"initial_loss": 2.31, "expected_loss": 2.302585, "ratio": 1.003},
        "outputs": outputs,
    }


NASTY = 'loss <b>4 × best</b> & "quoted" | pipe *star* <script>alert(1)</script>'


@pytest.fixture
def steps(tmp_path: Path) -> list[Step]:
    run = tmp_path / "babysit"
    failing = {
        "code": "diverged-immediately",
        "severity": "fail",
        "message": NASTY,
        "advice": "Lower the start LR & retry.",
        "evidence": {},
    }
    warning = {"code": "range-too-narrow", "severity": "warn", "message": "only 12 points", "advice": "Widen the range.", "evidence": {}}
    return [
        Step("check-loss", "nndiag check-loss r.yaml", verdict=_verdict(run / "01-check-loss", "check-loss", "pass"), seconds=1.2),
        Step(
            "lr-find",
            "nndiag lr-find r.yaml",
            verdict=_verdict(
                run / "02-lr-find",
                "lr-find",
                "fail",
                [failing, warning],
                {"suggested_lr": 0.0123, "curve": list(range(50)), "best": {"lr": 0.01}},
            ),
        ),
        Step("search (coarse)", "nndiag search r.yaml", state="not-reached", note="lr-find failed"),
        Step("probe", "nndiag probe r.yaml", state="skipped", note="nothing to probe"),
    ]


def test_writes_both_files_with_statuses_and_findings(tmp_path, steps):
    paths = write_report(tmp_path / "babysit", steps, recipe_name="quickstart", recipe_path="recipes/quickstart.yaml", budget="quick")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert paths["markdown"].name == "report.md" and paths["html"].name == "report.html"
    for text in (md, page):
        assert "quickstart" in text and "diverged-immediately" in text and "range-too-narrow" in text
        assert "Lower the start LR" in text and "lr-find failed" in text and "nothing to probe" in text
    assert "FAIL" in page and "PASS" in page and "NOT REACHED" in page and "SKIPPED" in page
    assert "Stopped at lr-find" in md and "Stopped at lr-find" in page
    assert "| 2 | [lr-find]" in md and "suggested LR 1.23e-2" in md


def test_html_is_self_contained_with_embedded_images(tmp_path, steps):
    page = write_report(tmp_path / "babysit", steps, recipe_name="quickstart")["html"].read_text()
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "no external assets"
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'href="data:text/csv;base64,' in page  # small CSVs embedded, downloadable


def test_special_characters_are_escaped(tmp_path, steps):
    paths = write_report(tmp_path / "babysit", steps, recipe_name="a <b>&</b> recipe")
    page, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>4 × best</b>" not in page and "a &lt;b&gt;&amp;&lt;/b&gt; recipe" in page
    assert "<script>" not in md and "\\<script\\>" in md
    row = next(line for line in md.splitlines() if "diverged-immediately" in line and line.startswith("|"))
    assert row.count("|") - row.count("\\|") == 5  # the message's pipe does not break the table


def test_markdown_links_are_relative(tmp_path, steps):
    md = write_report(tmp_path / "babysit", steps, recipe_name="q")["markdown"].read_text()
    assert "![check_loss](01-check-loss/check_loss.png)" in md
    assert "[check_loss.csv](01-check-loss/check_loss.csv)" in md
    links = [line for line in md.splitlines() if line.startswith(("![", "Data: "))]
    assert links and not any(str(tmp_path) in line for line in links)


def test_missing_figure_is_noted_not_fatal(tmp_path, steps):
    Path(steps[0].verdict["outputs"]["plots"][0]).unlink()
    page = write_report(tmp_path / "babysit", steps, recipe_name="q")["html"].read_text()
    assert "figure missing" in page


def test_large_csv_is_linked_not_embedded(tmp_path, steps, monkeypatch):
    import nndiag.diagnosis.report as br

    monkeypatch.setattr(br, "CSV_EMBED_MAX_BYTES", 10)
    page = write_report(tmp_path / "babysit", steps, recipe_name="q")["html"].read_text()
    assert 'href="01-check-loss/check_loss.csv"' in page


def test_overall_status_and_stopping_step(tmp_path, steps):
    assert overall_status(steps) == "fail" and stopping_step(steps).name == "lr-find"
    passing = [steps[0]]
    assert overall_status(passing) == "pass" and stopping_step(passing) is None
    warned = dict(steps[0].verdict, status="warn")
    assert overall_status([steps[0], Step("x", "x", verdict=warned)]) == "warn"
    errored = [
        steps[0],
        Step("train", "nndiag train", state="error", note="data.args.root: missing"),
        Step("curves", "c", state="not-reached"),
    ]
    assert overall_status(errored) == "fail" and stopping_step(errored).name == "train"
    # --continue: a failing step followed by steps that ran is not a stop
    assert stopping_step([steps[1], steps[0]]) is None


def test_steps_may_be_plain_dicts(tmp_path, steps):
    raw = [{"name": s.name, "command": s.command, "state": s.state, "verdict": s.verdict, "note": s.note} for s in steps]
    assert write_report(tmp_path / "babysit", raw, recipe_name="q")["html"].is_file()
    with pytest.raises(ValueError):
        Step("x", "x", state="finished")
    with pytest.raises(ValueError):
        Step("x", "x")  # ran, but no verdict


def test_key_numbers_prefer_the_commands_metrics_then_fill():
    verdict = {"command": "check-loss", "metrics": {"batches": 10, "ratio": 1.31, "initial_loss": 3.01, "expected_loss": 2.3026}}
    assert [k for k, _ in key_numbers(verdict)] == ["initial loss", "expected loss", "ratio"]
    unknown = {"command": "new-step", "metrics": {"name": "x", "flag": True, "a": 1, "b": 2.5, "c": 3, "d": 4}}
    assert key_numbers(unknown) == [("a", "1"), ("b", "2.5"), ("c", "3")]
    assert key_numbers(None) == []
    assert flat_metrics({"best": {"lr": 0.1, "deep": {"x": 1}}, "curve": list(range(9)), "few": [1, 2]}) == {
        "best.lr": 0.1,
        "few": "[1, 2]",
    }


def test_md_escape():
    assert md_escape("a|b *c* <d> [e](f)") == "a\\|b \\*c\\* \\<d\\> \\[e\\](f)"
    assert md_escape("val_loss _x_") == "val_loss \\_x\\_"
    assert md_escape("two\nlines") == "two lines"


# -- root causes: first in the report, with their fix; explained findings point at them ---------------


@pytest.fixture
def dead_steps(tmp_path: Path) -> list[Step]:
    run = tmp_path / "babysit"
    stuck = {
        "code": "loss-not-decreasing",
        "severity": "fail",
        "message": "it barely moved",
        "advice": "The learning rate is probably far too low.",
        "evidence": {"zero_gradients": True},
    }
    dead = {"code": "dead-relu", "severity": "fail", "message": "1 ReLU layer 100% dead", "advice": "Zero the biases.", "evidence": {}}
    frozen = {
        "code": "update-ratio-low",
        "severity": "warn",
        "message": "median 0",
        "advice": "Raise optim.lr.",
        "evidence": {"zero_gradients": True},
    }
    return [
        Step("overfit-small", "nndiag overfit-small r.yaml", verdict=_verdict(run / "01", "overfit-small", "fail", [stuck], plot=False)),
        Step("lr-find", "nndiag lr-find r.yaml", state="not-reached", note="stopped"),
        Step("probe", "nndiag probe r.yaml", verdict=_verdict(run / "03", "probe", "fail", [dead, frozen], plot=False)),
    ]


def test_report_leads_with_the_root_cause_and_suppresses_contradicted_advice(tmp_path, dead_steps):
    from nndiag.diagnosis.run import diagnose

    diagnosis = diagnose(dead_steps)
    assert [c.cause for c in diagnosis.causes] == ["dead-units"]
    assert diagnosis.role(0, 0) == (1, "explained") and diagnosis.role(2, 0) == (1, "evidence")
    paths = write_report(tmp_path / "babysit", dead_steps, recipe_name="dead")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    for text in (md, page):
        assert text.index("Root cause") < text.index("Summary")
        assert "dead-units" in text and "no learning rate can revive them" in text
        assert "far too low" not in text and "Raise optim.lr" not in text  # advice the evidence rules out
        assert "Explained by root cause 1" in text and "Zero the biases." in text  # evidence keeps its own advice
    callout = md[md.index("> **Stopped at") : md.index("## Root cause")]
    assert "Most likely root cause: ReLU units dead" in callout


def test_terminal_summary_names_the_root_cause_first(dead_steps, tmp_path):
    from rich.console import Console

    from nndiag.diagnosis.report import render_terminal

    console = Console(record=True, width=200)
    render_terminal(dead_steps, {"html": tmp_path / "r.html", "markdown": tmp_path / "r.md"}, console)
    text = console.export_text()
    assert "root cause (most likely): ReLU units dead" in text and "fix: Dead units" in text
    assert text.index("root cause (most likely)") < text.index("overfit-small: loss-not-decreasing")
    assert "explained by root cause 1 (dead-units)" in text and "far too low" not in text


def test_no_root_cause_for_failures_nothing_explains(tmp_path, steps):
    md = write_report(tmp_path / "babysit", steps, recipe_name="q")["markdown"].read_text()
    assert "No root cause ranked: no single cause explains the findings" in md
    assert "Lower the start LR" in md  # the unexplained finding keeps its advice


# -- what every report opens with, and a finding said once -------------------------------------------


@pytest.fixture
def repeated(tmp_path: Path) -> list[Step]:
    """train and curves read the same log: the same bad-init finding in both (as babysit's steps 5 and 6 give it)."""
    run = tmp_path / "babysit"
    bad_init = {
        "code": "bad-init",
        "severity": "warn",
        "message": "the first loss 9.1 is 4x the chance level ln 10",
        "advice": "Check the init with `nndiag check-loss` and `nndiag probe`; lower the last layer's scale.",
        "evidence": {},
    }
    return [
        Step("check-loss", "nndiag check-loss r.yaml", verdict=_verdict(run / "01-check-loss", "check-loss", "pass"), seconds=1.0),
        Step("train", "nndiag train r.yaml", verdict=_verdict(run / "02-train", "train", "warn", [bad_init]), seconds=2.0),
        Step("curves", "nndiag curves x", verdict=_verdict(run / "03-curves", "curves", "warn", [dict(bad_init)]), seconds=0.5),
    ]


def test_every_report_opens_with_the_verdict_and_the_ranked_causes(tmp_path, repeated):
    from rich.console import Console

    from nndiag.diagnosis.report import render_terminal

    paths = write_report(tmp_path / "babysit", repeated, recipe_name="q", recipe_path="r.yaml", context={"model": "mlp"})
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert md.index("**Overall: ⚠️ WARN** · 1 warn") < md.index("## Root cause") < md.index("Recipe:") < md.index("## Summary")
    assert page.index("WARN</span>") < page.index("<h2>Root cause") < page.index("recipe <code>") < page.index("<h2>Summary")
    console = Console(width=100, record=True, color_system=None)
    render_terminal(repeated, paths, console)
    text = console.export_text()
    assert text.splitlines()[1].strip("│ ").startswith("WARN  babysit: 1 warn")  # the first thing shown
    assert text.index("no root cause ranked") < text.index("babysit: every step") and text.rstrip().endswith("report.md")


def test_a_finding_two_steps_make_is_shown_once_and_the_second_links_to_the_first(tmp_path, repeated):
    from rich.console import Console

    from nndiag.diagnosis.report import render_terminal

    paths = write_report(tmp_path / "babysit", repeated, recipe_name="q")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    message = "the first loss 9.1 is 4x the chance level ln 10"
    assert md.count(message) == 1 and "the same finding as [train](#step-2-train) (step 2)" in md
    assert page.count(message) == 1 and 'The same finding as <a href="#step-2-train">train</a> (step 2)' in page
    console = Console(width=120, record=True, color_system=None)
    render_terminal(repeated, paths, console)
    text = console.export_text()
    assert text.count(message) == 1 and "curves: bad-init: the same as train (step 2), above" in text


def test_html_advice_renders_code_spans(tmp_path, repeated):
    page = write_report(tmp_path / "babysit", repeated, recipe_name="q")["html"].read_text()
    assert "Check the init with <code>nndiag check-loss</code> and <code>nndiag probe</code>" in page
    assert "`nndiag" not in page.split("<main>")[1]  # no literal backtick left in what people read
    md = write_report(tmp_path / "b2", repeated, recipe_name="q")["markdown"].read_text()
    assert "`nndiag check-loss`" in md and "\\`" not in md  # Markdown keeps them as code, not escaped


def test_figures_keep_their_text_whole_and_their_legend_off_the_curve(tmp_path):
    """Probe panel titles stay within a panel; the curves caption is never cut; lr-find's legend sits beside the axes."""
    import torch
    from torch import nn

    import nndiag
    from nndiag.output.plots import PANEL_TITLE_CHARS, caption, figures, panel_title

    for layer, module in (("bert.encoder.layer.0.attention.output.dense", "Linear"), ("layer1.0.downsample.0", "Conv2d")):
        title = panel_title(layer, module)
        assert len(title.split("\n")) <= 2 and all(len(line) <= PANEL_TITLE_CHARS for line in title.split("\n"))
        assert title.replace("\n", " ").replace(". ", ".").endswith(f"({module})")
    long = type("F", (), {"severity": "warn", "code": "underfitting", "message": "train and val loss are close " * 8 + "END"})()
    assert caption([long], width=80).replace("\n    ", " ").endswith("END") and max(map(len, caption([long], 80).split("\n"))) <= 80
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    result = nndiag.lr_find(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), data=(x, y), batch_size=16, steps=30, refine_steps=0
    )
    (name, fig), *_ = figures(result)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert name == "lr_find.png" and ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # outside the plot

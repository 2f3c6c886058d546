"""The report of a run of steps (babysit, a trainer callback, `nndiag.watch`): every step's verdict, key
numbers, figures and CSVs in one Markdown file and one self-contained HTML page, and the closing
summary in the terminal.

    from nndiag.diagnosis import report
    summary = report.write(run, metrics, title="quickstart", budget="quick")   # report.md, report.html, summary.json

`write_report(folder, steps, ...)` draws the pages from a list of `Step`s (nndiag.diagnosis.run; a plain
dict with the same keys works too). The report, the terminal summary and the JSON all put the most
likely root cause first, with its fix, and show a finding that a root cause explains as "explained by
root cause N" instead of its own advice. `key_numbers(verdict)` gives 2-3 (label, formatted value)
pairs per step.

Paths in a verdict may be absolute or relative to the working directory (as write_run returns them).
Markdown links are made relative to the report's folder; the HTML embeds every PNG as a base64 data
URI and every CSV up to CSV_EMBED_MAX_BYTES as a downloadable data URI (bigger CSVs get a relative
link), so report.html can be mailed or attached to a CI run on its own. No torch, no JavaScript, no
external assets.
"""

from __future__ import annotations

import base64
import html
import os
import re
import time
from pathlib import Path
from typing import Any

from nndiag.diagnosis.run import Diagnosis, Run, Step, as_steps, diagnose, overall_status, stopping_step
from nndiag.findings import audience_of
from nndiag.formatting import number as fmt
from nndiag.formatting import words
from nndiag.output import files

CSV_EMBED_MAX_BYTES = 512 * 1024  # CSVs up to this size are embedded in the HTML; larger ones are linked
ALL_METRICS_OPEN = 0  # the HTML shows the full metrics table unfolded when a step has at most this many (0: always folded)

# The numbers worth seeing first for each command; metrics not named here fill up to three.
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "check-loss": ("initial_loss", "expected_loss", "ratio"),
    "overfit-small": ("final_accuracy", "final_loss_ratio", "steps_to_100pct"),
    "lr-find": ("suggested_lr", "lr_min", "lr_max"),
    "search": ("best_val_acc", "best_val_loss", "trials"),
    "train": ("best_epoch_val_acc", "final_val_acc", "final_val_loss", "best_epoch"),
    "curves": ("best_val_loss", "final_val_loss", "final_val_acc"),
    "probe": ("last_activation_std", "max_frac_dead", "median_update_ratio"),
}

# How each status looks: (Markdown badge, HTML label, colour, pale background)
LOOK: dict[str, tuple[str, str, str, str]] = {
    "pass": ("✅ pass", "PASS", "#1a7f37", "#e6f4ea"),
    "warn": ("⚠️ warn", "WARN", "#9a6700", "#fff5d6"),
    "fail": ("❌ fail", "FAIL", "#c62828", "#fdecea"),
    "error": ("⛔ error", "ERROR", "#c62828", "#fdecea"),
    "skipped": ("⏭️ skipped", "SKIPPED", "#57606a", "#f1f3f5"),
    "not-reached": ("⏸️ not reached", "NOT REACHED", "#57606a", "#f1f3f5"),
}
SEVERITY_COLOUR = {"info": "#0969da", "warn": "#9a6700", "fail": "#c62828"}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalar metrics, with one level of nested mappings flattened (best_params.optim.lr); lists of
    up to five scalars are kept, longer ones left to the CSVs."""
    flat: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if _scalar(inner):
                    flat[f"{key}.{sub}"] = inner
        elif isinstance(value, (list, tuple)):
            if len(value) <= 5 and all(_scalar(v) for v in value):
                flat[key] = "[" + ", ".join(fmt(v, key) for v in value) + "]"
        elif _scalar(value):
            flat[key] = value
    return flat


def key_numbers(verdict: dict[str, Any] | None, count: int = 3) -> list[tuple[str, str]]:
    """Up to `count` (name, formatted value) pairs: the command's preferred metrics, then the first
    numeric others."""
    if not verdict:
        return []
    metrics = flat_metrics(verdict.get("metrics") or {})
    chosen = [k for k in KEY_METRICS.get(str(verdict.get("command")), ()) if k in metrics and metrics[k] is not None]
    for key, value in metrics.items():
        if len(chosen) >= count:
            break
        if key not in chosen and isinstance(value, (int, float)) and not isinstance(value, bool):
            chosen.append(key)
    return [(words(k), fmt(metrics[k], k)) for k in chosen[:count]]


# --------------------------------------------------------------------------------------------
# Files a step produced
# --------------------------------------------------------------------------------------------


def _path(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser()


def _relative(path: str | os.PathLike[str], folder: Path) -> str:
    """`path` as a link from `folder` (POSIX separators)."""
    target = Path(path).expanduser().resolve()
    return Path(os.path.relpath(target, folder.resolve())).as_posix()


def step_plots(step: Step) -> list[Path]:
    plots = step.outputs.get("plots") or []
    return [_path(p) for p in (plots if isinstance(plots, list) else [plots])]


def step_csvs(step: Step) -> list[tuple[str, Path]]:
    csvs = step.outputs.get("csv") or {}
    if isinstance(csvs, dict):
        return [(str(name), _path(p)) for name, p in csvs.items()]
    return [(Path(p).stem, _path(p)) for p in csvs]


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|#])|(?<!\w)_|_(?!\w)")


def md_escape(text: Any) -> str:
    """Text safe to place in Markdown prose or a table cell: no emphasis, links, HTML or cell breaks
    by accident (intraword underscores such as val_loss are left alone; they are literal in GFM)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


_BACKTICKS = re.compile(r"`([^`]+)`")


def md_prose(text: Any) -> str:
    """Text written for people, with `code` spans kept as code (the rest escaped as `md_escape` does)."""
    parts = _BACKTICKS.split(str(text))
    return "".join(_md_code(part) if i % 2 else md_escape(part) for i, part in enumerate(parts))


def steps_of(diagnosis: Diagnosis, key: tuple[int, int]) -> str:
    """The name of the step a (step index, finding index) key belongs to."""
    return str(diagnosis.findings[diagnosis.keys.index(key)].get("step"))


def _has_recipe(head: dict[str, Any]) -> bool:
    """A run from a recipe file (not your own objects: a Python call, a watched loop, a callback)."""
    return bool(head.get("recipe_path")) and audience_of(head["recipe_path"]) == "recipe"


def _go_on(head: dict[str, Any]) -> str:
    """How the reader makes babysit run past a failed step, in their words."""
    return "use `--continue`" if audience_of(head.get("recipe_path") or "python") == "recipe" else "call it with `keep_going=True`"


def _md_code(text: Any) -> str:
    text = str(text).replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def render_markdown(folder: Path, steps: list[Step], head: dict[str, Any], diagnosis: Diagnosis) -> str:
    """The page opens with the verdict and the ranked root causes; what ran and the steps follow."""
    status = overall_status(steps)
    lines = [f"# nndiag {md_escape(head.get('command') or 'babysit')}: {md_escape(head['recipe_name'])}", ""]
    lines.append(
        f"**Overall: {LOOK[status][0].upper()}** · {md_escape(verdict_line(steps, diagnosis))} · {md_escape(head['date'])}"
        + (f" · budget {md_escape(head['budget'])}" if head.get("budget") else "")
    )
    lines.append("")
    stop = stopping_step(steps)
    if stop is not None:
        lines += [f"> **Stopped at {md_escape(stop.name)}.** The later steps were not run ({_go_on(head)} to go on anyway).", ">"]
        lines += [f"> {md_prose(text)}" for text in _stop_advice(steps, stop, diagnosis)]
        lines.append("")
    lines += _md_causes(diagnosis)
    if _has_recipe(head):
        lines.append(f"Recipe: {_md_code(head['recipe_path'])}  ")
    for key, value in (head.get("context") or {}).items():
        lines.append(f"{md_escape(key.capitalize())}: {md_escape(value)}  ")
    lines.append("")
    lines += ["## Summary", "", "| # | step | status | key numbers | time |", "|---:|---|---|---|---:|"]
    for i, step in enumerate(steps, 1):
        numbers = ", ".join(f"{md_escape(k)} {md_escape(v)}" for k, v in key_numbers(step.verdict)) or md_escape(step.note)
        seconds = f"{step.seconds:.1f} s" if step.seconds is not None else ""
        lines.append(f"| {i} | [{md_escape(step.name)}](#{_anchor(i, step.name)}) | {LOOK[step.status][0]} | {numbers} | {seconds} |")
    lines.append("")
    for i, step in enumerate(steps, 1):
        lines += _md_step(folder, i, step, diagnosis)
    lines.append(
        f"---\n\n*Written by nndiag on {md_escape(head['date'])}. Each step's folder holds its CSVs"
        + (", resolved recipe" if _has_recipe(head) else "")
        + " and summary.json.*"
    )
    return "\n".join(lines) + "\n"


def _stop_advice(steps: list[Step], stop: Step, diagnosis: Diagnosis) -> list[str]:
    """What the stopping step says to do: its root cause's fix where one explains its failing findings, else their advice."""
    index = steps.index(stop)
    texts: list[str] = []
    for fi, finding in enumerate(stop.findings):
        if finding.get("severity") != "fail":
            continue
        role = diagnosis.role(index, fi)
        text = (
            f"Most likely root cause: {diagnosis.title(role[0])}. {diagnosis.causes[role[0] - 1].fix}"
            if role
            else str(finding.get("advice", ""))
        )
        if text and text not in texts:
            texts.append(text)
    if stop.state == "error":
        texts.append(stop.note)
    return texts


def _finding_ref(finding: dict[str, Any]) -> str:
    return f"{finding.get('step')} {finding.get('code')}"


def verdict_line(steps: list[Step], diagnosis: Diagnosis) -> str:
    """The verdict in words: how many findings of each severity (repeats counted once), and how many root causes."""
    once = [diagnosis.findings[i] for i, _ in diagnosis.once(list(range(len(diagnosis.findings))))]
    counts = {sev: sum(f.get("severity") == sev for f in once) for sev in ("fail", "warn", "info")}
    said = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "no findings"
    errors = sum(s.state == "error" for s in steps)
    causes = len(diagnosis.causes)
    return (
        said
        + (f", {errors} step{'s' * (errors > 1)} could not run" if errors else "")
        + (f"; {causes} root cause{'s' * (causes > 1)} ranked below" if causes else "")
    )


def _also(steps: list[str]) -> str:
    return f" (also {', '.join(steps)})" if steps else ""


def _md_causes(diagnosis: Diagnosis) -> list[str]:
    if not diagnosis.causes:
        if any(f.get("severity") in ("fail", "warn") for f in diagnosis.findings):
            return ["## Root cause", "", "No root cause ranked: no single cause explains the findings; each one's own advice is below.", ""]
        return []
    lines = ["## Root cause" if len(diagnosis.causes) == 1 else "## Root causes, most likely first", ""]
    for number, cause in enumerate(diagnosis.causes, 1):
        lines.append(f"**{number}. {md_escape(cause.title)}** ({_md_code(cause.cause)}, {md_escape(cause.severity)})  ")
        lines.append(
            "Evidence: "
            + "; ".join(
                f"{md_escape(diagnosis.findings[i].get('step'))} {_md_code(diagnosis.findings[i].get('code'))}{md_escape(_also(also))}: "
                f"{md_prose(diagnosis.findings[i].get('message', ''))}"
                for i, also in diagnosis.once(cause.evidence)
            )
            + "  "
        )
        if cause.explained:
            lines.append(
                "Explains: "
                + ", ".join(
                    f"{md_escape(diagnosis.findings[i].get('step'))} {_md_code(diagnosis.findings[i].get('code'))}{md_escape(_also(also))}"
                    for i, also in diagnosis.once(cause.explained)
                )
                + "  "
            )
        lines += [f"Fix: {md_prose(cause.fix)}", ""]
    return lines


def _anchor(index: int, name: str) -> str:
    return f"step-{index}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _md_step(folder: Path, index: int, step: Step, diagnosis: Diagnosis) -> list[str]:
    lines = [f'<a id="{_anchor(index, step.name)}"></a>', "", f"## {index}. {md_escape(step.name)}: {LOOK[step.status][0]}", ""]
    lines.append(f"    {step.command}")
    lines.append("")
    if step.state != "run":
        lines += [md_escape(step.note) if step.note else "", ""]
        return lines
    findings = step.findings
    if findings:
        lines += ["| severity | finding | what we saw | what to do |", "|---|---|---|---|"]
        for fi, f in enumerate(findings):
            first = diagnosis.repeat_of(index - 1, fi)
            if first is not None:  # said by an earlier step already: once, with a link
                where = f"[{md_escape(steps_of(diagnosis, first))}](#{_anchor(first[0] + 1, steps_of(diagnosis, first))})"
                lines.append(
                    f"| {md_escape(f.get('severity', ''))} | {_md_code(f.get('code', ''))} | the same finding as {where} "
                    f"(step {first[0] + 1}) | see there |"
                )
                continue
            advice = diagnosis.shown_advice(index - 1, fi, f)
            lines.append(
                f"| {md_escape(f.get('severity', ''))} | {_md_code(f.get('code', ''))} | {md_prose(f.get('message', ''))} | {md_prose(advice)} |"
            )
    else:
        lines.append("No problems found.")
    lines.append("")
    metrics = flat_metrics((step.verdict or {}).get("metrics") or {})
    if metrics:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {md_escape(words(k))} | {md_escape(fmt(v, k))} |" for k, v in metrics.items()]
        lines.append("")
    for plot in step_plots(step):
        lines += [f"![{md_escape(plot.stem)}]({_md_link(_relative(plot, folder))})", ""]
    csvs = step_csvs(step)
    if csvs:
        lines.append("Data: " + " · ".join(f"[{md_escape(name)}.csv]({_md_link(_relative(p, folder))})" for name, p in csvs))
        lines.append("")
    return lines


def _md_link(target: str) -> str:
    return target.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


# --------------------------------------------------------------------------------------------
# HTML (one self-contained file)
# --------------------------------------------------------------------------------------------

CSS = """
:root { --ink:#1f2328; --muted:#57606a; --line:#d8dee4; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:16px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 28px; margin: 0 0 6px; }
h2 { font-size: 21px; margin: 0; }
h3 { font-size: 15px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 22px 0 8px; }
.meta { color: var(--muted); margin: 0 0 4px; }
.meta b { color: var(--ink); font-weight: 600; }
code, pre { font-family: ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size: 13.5px; }
pre { background:#eef1f4; border-radius:6px; padding:8px 12px; margin:10px 0 0; white-space:pre-wrap; word-break:break-all; }
.pill { display:inline-block; border-radius:999px; padding:2px 12px; font-weight:700; font-size:13px; letter-spacing:.05em; white-space:nowrap; }
.big { font-size:18px; padding:4px 18px; vertical-align:middle; margin-left:10px; }
.card { background:#fff; border:1px solid var(--line); border-left:6px solid var(--muted); border-radius:8px; padding:18px 22px; margin:18px 0; }
.callout { border-radius:8px; padding:14px 18px; margin:18px 0; }
table { border-collapse:collapse; width:100%; margin:6px 0; }
th, td { text-align:left; vertical-align:top; padding:7px 10px; border-bottom:1px solid var(--line); }
th { font-size:13px; color:var(--muted); font-weight:600; background:#fafbfc; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
.summary td:first-child { width: 2em; color: var(--muted); }
.summary a { color: var(--ink); font-weight: 600; text-decoration: none; }
.tiles { display:flex; flex-wrap:wrap; gap:12px; }
.tile { border:1px solid var(--line); border-radius:8px; padding:8px 16px; min-width:150px; background:#fafbfc; }
.tile .label { font-size:12.5px; color:var(--muted); }
.tile .value { font-size:22px; font-weight:600; font-variant-numeric: tabular-nums; }
.metrics { width:auto; min-width:50%; }
.metrics td:first-child { color: var(--muted); padding-right: 32px; }
.finding { border-left:4px solid; padding:8px 14px; margin:10px 0; background:#fafbfc; border-radius:0 6px 6px 0; }
.finding .code { font-weight:700; }
.finding .sev { font-size:12px; font-weight:700; text-transform:uppercase; margin-right:8px; }
.finding p { margin:4px 0 0; }
.advice { color: var(--muted); }
.advice b { color: var(--ink); }
.ok { color:#1a7f37; }
figure { margin:14px 0; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:13px; }
.files a { display:inline-block; margin:4px 8px 0 0; padding:3px 10px; border:1px solid var(--line); border-radius:6px; color:#0969da; text-decoration:none; font-size:14px; background:#fff; }
.note { color: var(--muted); margin: 10px 0 0; }
details summary { cursor: pointer; color: var(--muted); margin-top: 8px; }
footer { color: var(--muted); font-size: 13px; margin-top: 36px; }
@media print { body { background:#fff; } .card { break-inside: avoid; } }
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def prose(text: Any) -> str:
    """Text written for people as HTML: escaped, with `code` spans (a command, a recipe key) as <code>."""
    parts = _BACKTICKS.split(str(text))
    return "".join(f"<code>{esc(part)}</code>" if i % 2 else esc(part) for i, part in enumerate(parts))


def _pill(status: str, big: bool = False) -> str:
    _, label, colour, pale = LOOK[status]
    return f'<span class="pill{" big" if big else ""}" style="color:{colour};background:{pale};border:1px solid {colour}">{label}</span>'


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(folder: Path, steps: list[Step], head: dict[str, Any], diagnosis: Diagnosis) -> str:
    status = overall_status(steps)
    title = f"nndiag {head.get('command') or 'babysit'}: {head['recipe_name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)} ({status})</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{esc(title)} {_pill(status, big=True)}</h1>",
        f'<p class="meta"><b>{esc(verdict_line(steps, diagnosis))}</b> · {esc(head["date"])}'
        + (f" · budget <b>{esc(head['budget'])}</b>" if head.get("budget") else "")
        + "</p>",
    ]
    parts += _html_stop(steps, diagnosis, head)  # the verdict, the stop and the ranked causes first; what ran after them
    parts += _html_causes(diagnosis)
    if _has_recipe(head):
        parts.append(f'<p class="meta">recipe <code>{esc(head["recipe_path"])}</code></p>')
    context = head.get("context") or {}
    if context:
        parts.append('<p class="meta">' + " · ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in context.items()) + "</p>")
    parts += ['<div class="card" style="border-left-color:var(--line)"><h2>Summary</h2>', _html_summary(steps), "</div>"]
    for i, step in enumerate(steps, 1):
        parts += _html_step(folder, i, step, diagnosis)
    parts.append(
        f"<footer>Written by nndiag on {esc(head['date'])} into <code>{esc(folder)}</code>. "
        + (
            "Each step's folder holds its CSVs, resolved recipe and summary.json.</footer>"
            if _has_recipe(head)
            else "Each step's folder holds its CSVs and summary.json.</footer>"
        )
    )
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _html_stop(steps: list[Step], diagnosis: Diagnosis, head: dict[str, Any]) -> list[str]:
    stop = stopping_step(steps)
    if stop is None:
        return []
    _, _, colour, pale = LOOK["fail"]
    items = "".join(f"<p>{prose(a)}</p>" for a in _stop_advice(steps, stop, diagnosis) if a)
    return [
        f'<div class="callout" style="background:{pale};border:1px solid {colour}">'
        f"<b>Stopped at {esc(stop.name)}.</b> The later steps were not run ({prose(_go_on(head))} to go on anyway).{items}</div>"
    ]


def _html_causes(diagnosis: Diagnosis) -> list[str]:
    if not diagnosis.causes:
        if any(f.get("severity") in ("fail", "warn") for f in diagnosis.findings):
            return [
                '<div class="card"><h2>Root cause</h2><p class="note">No root cause ranked: no single cause explains the findings; '
                "each one's own advice is below.</p></div>"
            ]
        return []
    parts = [
        '<div class="card" style="border-left-color:{}"><h2>{}</h2>'.format(
            LOOK[diagnosis.causes[0].severity][2], "Root cause" if len(diagnosis.causes) == 1 else "Root causes, most likely first"
        )
    ]
    for number, cause in enumerate(diagnosis.causes, 1):
        c = SEVERITY_COLOUR.get(cause.severity, "#57606a")
        found = diagnosis.findings
        evidence = "".join(
            f"<li>{esc(found[i].get('step'))} <code>{esc(found[i].get('code'))}</code>{esc(_also(also))}: {prose(found[i].get('message', ''))}</li>"
            for i, also in diagnosis.once(cause.evidence)
        )
        explains = ", ".join(
            f"{esc(found[i].get('step'))} <code>{esc(found[i].get('code'))}</code>{esc(_also(also))}"
            for i, also in diagnosis.once(cause.explained)
        )
        parts.append(
            f'<div class="finding" style="border-left-color:{c}"><span class="sev" style="color:{c}">{number}</span>'
            f'<b>{esc(cause.title)}</b> <code class="code">{esc(cause.cause)}</code>'
            f"<p>Evidence:</p><ul>{evidence}</ul>"
            + (f"<p>Explains: {explains}</p>" if explains else "")
            + f'<p class="advice"><b>Fix:</b> {prose(cause.fix)}</p></div>'
        )
    return parts + ["</div>"]


def _html_summary(steps: list[Step]) -> str:
    rows = [
        '<table class="summary"><tr><th>#</th><th>step</th><th>status</th><th>key numbers</th><th style="text-align:right">time</th></tr>'
    ]
    for i, step in enumerate(steps, 1):
        numbers = key_numbers(step.verdict)
        cell = " · ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in numbers) if numbers else f'<span class="advice">{esc(step.note)}</span>'
        seconds = f"{step.seconds:.1f} s" if step.seconds is not None else ""
        rows.append(
            f'<tr><td>{i}</td><td><a href="#{_anchor(i, step.name)}">{esc(step.name)}</a></td>'
            f'<td>{_pill(step.status)}</td><td>{cell}</td><td class="num">{seconds}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


def _html_step(folder: Path, index: int, step: Step, diagnosis: Diagnosis) -> list[str]:
    colour = LOOK[step.status][2]
    seconds = f' <span class="advice" style="font-size:14px">{step.seconds:.1f} s</span>' if step.seconds is not None else ""
    parts = [
        f'<section class="card" id="{_anchor(index, step.name)}" style="border-left-color:{colour}">',
        f"<h2>{index}. {esc(step.name)} {_pill(step.status)}{seconds}</h2>",
        f"<pre>{esc(step.command)}</pre>",
    ]
    if step.state != "run":
        if step.note:
            parts.append(f'<p class="note">{esc(step.note)}</p>')
        return parts + ["</section>"]
    parts.append("<h3>Findings</h3>")
    if not step.findings:
        parts.append('<p class="ok">No problems found.</p>')
    for fi, f in enumerate(step.findings):
        sev = str(f.get("severity", "info"))
        c = SEVERITY_COLOUR.get(sev, "#57606a")
        first = diagnosis.repeat_of(index - 1, fi)
        if first is not None:  # said by an earlier step already: once, with a link
            name = steps_of(diagnosis, first)
            parts.append(
                f'<div class="finding" style="border-left-color:{c}"><span class="sev" style="color:{c}">{esc(sev)}</span>'
                f'<code class="code">{esc(f.get("code", ""))}</code><p>The same finding as '
                f'<a href="#{_anchor(first[0] + 1, name)}">{esc(name)}</a> (step {first[0] + 1}): see there.</p></div>'
            )
            continue
        parts.append(
            f'<div class="finding" style="border-left-color:{c}"><span class="sev" style="color:{c}">{esc(sev)}</span>'
            f'<code class="code">{esc(f.get("code", ""))}</code><p>{prose(f.get("message", ""))}</p>'
            f'<p class="advice"><b>What to do:</b> {prose(diagnosis.shown_advice(index - 1, fi, f))}</p></div>'
        )
    parts += _html_metrics(step)
    for plot in step_plots(step):
        if plot.is_file():
            parts.append(
                f'<figure><img src="{_data_uri(plot, "image/png")}" alt="{esc(plot.stem)}"><figcaption>{esc(plot.name)}</figcaption></figure>'
            )
        else:
            parts.append(f'<p class="note">figure missing: {esc(plot)}</p>')
    links = []
    for name, path in step_csvs(step):
        if path.is_file() and path.stat().st_size <= CSV_EMBED_MAX_BYTES:
            href = _data_uri(path, "text/csv")
            links.append(f'<a href="{href}" download="{esc(path.name)}">{esc(name)}.csv</a>')
        else:
            links.append(f'<a href="{esc(_relative(path, folder))}">{esc(name)}.csv</a>')
    if links:
        parts.append('<h3>Data</h3><div class="files">' + "".join(links) + "</div>")
    return parts + ["</section>"]


def _html_metrics(step: Step) -> list[str]:
    """The key numbers as tiles, then every metric in a folded table."""
    metrics = flat_metrics((step.verdict or {}).get("metrics") or {})
    if not metrics:
        return []
    numbers = key_numbers(step.verdict)
    tiles = "".join(f'<div class="tile"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div></div>' for k, v in numbers)
    parts = ["<h3>Key numbers</h3>", f'<div class="tiles">{tiles}</div>']
    rows = "".join(f'<tr><td>{esc(words(k))}</td><td class="num">{esc(fmt(v, k))}</td></tr>' for k, v in metrics.items())
    table = f'<table class="metrics">{rows}</table>'
    if len(metrics) > len(numbers):
        parts.append(
            f"<details{' open' if len(metrics) <= ALL_METRICS_OPEN else ''}><summary>all {len(metrics)} metrics</summary>{table}</details>"
        )
    return parts


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_report(
    folder: str | os.PathLike[str],
    steps: list[Step | dict[str, Any]],
    *,
    recipe_name: str,
    recipe_path: str | None = None,
    context: dict[str, str] | None = None,
    budget: str | None = None,
    date: str | None = None,
    command: str = "babysit",
) -> dict[str, Path]:
    """Write report.md and report.html into `folder`; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ordered = as_steps(steps)
    head = {
        "command": command,
        "recipe_name": recipe_name,
        "recipe_path": recipe_path,
        "context": context or {},
        "budget": budget,
        "date": date or time.strftime("%Y-%m-%d %H:%M"),
    }
    md_path, html_path = folder / "report.md", folder / "report.html"
    diagnosis = diagnose(ordered, audience_of(recipe_path))  # one ranking for both pages, its fixes in the reader's words
    files.atomic_write_text(md_path, render_markdown(folder, ordered, head, diagnosis))
    files.atomic_write_text(html_path, render_html(folder, ordered, head, diagnosis))
    return {"markdown": md_path, "html": html_path}


def render_terminal(steps: list[Step | dict[str, Any]], paths: dict[str, Path], console: Any) -> None:
    """The closing summary in the terminal. It opens with the verdict and the ranked root causes (what to fix first),
    then one row per step, then each finding once (a later step's repeat points to the first) with what to do, and
    ends with where the report is."""
    from rich.panel import Panel
    from rich.table import Table

    from nndiag.output.terminal import STATUS_STYLE

    steps = as_steps(steps)
    diagnosis = diagnose(steps)
    status = overall_status(steps)
    console.print(
        Panel(f"[{STATUS_STYLE[status]}]{status.upper()}[/]  babysit: {_rich_escape(verdict_line(steps, diagnosis))}", expand=False)
    )
    for number, cause in enumerate(diagnosis.causes, 1):
        head = "root cause (most likely)" if number == 1 else f"possible cause {number}"
        colour = "red" if cause.severity == "fail" else "yellow"
        found = diagnosis.findings
        evidence = "; ".join(f"{found[i].get('step')} {found[i].get('code')}{_also(also)}" for i, also in diagnosis.once(cause.evidence))
        explains = ", ".join(f"{_finding_ref(found[i])}{_also(also)}" for i, also in diagnosis.once(cause.explained))
        console.print(
            f"[bold {colour}]{head}: {_rich_escape(cause.title)}[/] [dim]({cause.cause})[/]\n  evidence: {_rich_escape(evidence)}"
            + (f"\n  explains: {_rich_escape(explains)}" if explains else "")
            + f"\n  fix: {_rich_escape(cause.fix)}"
        )
    if not diagnosis.causes and any(f.get("severity") in ("fail", "warn") for f in diagnosis.findings):
        console.print("[dim]no root cause ranked: no single cause explains the findings; each one's own advice is below[/]")
    table = Table(title="babysit: every step", title_justify="left")
    for column in ("#", "step", "status", "key numbers", "seconds"):
        table.add_column(column, justify="right" if column in ("#", "seconds") else "left", overflow="fold")
    for i, step in enumerate(steps, 1):
        style = STATUS_STYLE.get(step.status, "dim")
        numbers = ", ".join(f"{k} {v}" for k, v in key_numbers(step.verdict)) if step.verdict else step.note
        seconds = f"{step.seconds:.1f}" if step.seconds is not None else ""
        table.add_row(str(i), step.name, f"[{style}]{step.status}[/]", _rich_escape(numbers), seconds)
    console.print(table)
    for si, step in enumerate(steps):
        repeated = []
        for fi, finding in enumerate(step.findings):
            first = diagnosis.repeat_of(si, fi)
            if first is not None:
                repeated.append((str(finding.get("code")), f"{steps_of(diagnosis, first)} (step {first[0] + 1})"))
                continue
            colour = {"fail": "red", "warn": "yellow"}.get(finding.get("severity"), "cyan")
            role = diagnosis.role(si, fi)
            then = (
                f"{'explained by' if role[1] == 'explained' else 'evidence for'} root cause {role[0]} ({diagnosis.causes[role[0] - 1].cause})"
                if role
                else finding.get("advice")
            )
            console.print(
                f"[{colour}]{step.name}: {finding.get('code')}[/] {_rich_escape(finding.get('message'))}\n  -> {_rich_escape(then)}"
            )
        for where in dict.fromkeys(w for _, w in repeated):
            codes = ", ".join(c for c, w in repeated if w == where)
            console.print(f"[dim]{step.name}: {codes}: the same as {where}, above[/]")
    stop = stopping_step(steps)
    if stop is not None:
        console.print(f"[bold red]stopped at {stop.name}[/]: fix it and run again, or use --continue to run the rest anyway.")
    indent = " " * (len(status) + len("  report: "))
    console.print(f"[{STATUS_STYLE[status]}]{status.upper()}[/]  report: {paths['html']}\n{indent}{paths['markdown']}", soft_wrap=True)


def _rich_escape(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text))


def write(run: Run, metrics: dict[str, Any] | None = None, *, title: str, budget: str | None = None) -> dict[str, Any]:
    """report.md, report.html and summary.json in the run's folder; returns the summary (the run's verdict object)."""
    folder = run.ensure_folder()
    reports = write_report(
        folder, run.steps, recipe_name=title, recipe_path=run.source, context=run.context, budget=budget, command=run.command
    )
    verdict = run.summary(metrics, {"md": reports["markdown"], "html": reports["html"]})
    files.write_summary(folder, verdict)
    return verdict

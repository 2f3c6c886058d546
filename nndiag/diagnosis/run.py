"""A diagnosis in several steps, written to one folder: babysit's steps, and the stages of a trainer
callback or of `nndiag.watch`.

A `Run` records each step as it ends: a step that ran is written into its own sub-folder
(`01-check-loss/`, `02-overfit-small/`, ...) with exactly the files its own command writes
(`output.files.write_run`), and becomes a `Step` holding its verdict; a step that did not run is a
`Step` with the state that says why and a note. `summary()` is the one combined verdict of such a run
(its `--json` object and summary.json): the contract's keys (command, recipe, status, findings,
metrics, outputs) plus `root_causes` (most likely first) and `steps`; each finding carries its `step`
and `explained_by` (the root cause it follows from). `diagnosis.report.write(run)` writes summary.json,
report.md and report.html. The root causes are ranked by one function (`diagnose`), the same for the JSON, the report and the terminal.

States of a step:
  run          it ran; `verdict` is write_run's dict (command, recipe, status, findings, metrics, outputs)
  skipped      deliberately not run (the probe when nothing failed; check-loss on resumed training); `note` says why
  not-reached  an earlier gate failed and babysit stopped (no --continue)
  error        it could not run (bad input, or the user's code raised); `note` holds the one-paragraph message

The overall status is the worst status of the steps that ran, and "fail" when a step errored (nndiag
could not check what that step checks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nndiag.diagnosis.root_cause import RootCause, cause_of, explained_by, rank
from nndiag.findings import audience_of
from nndiag.output import files
from nndiag.result import Result, verdict_object

STATES = ("run", "skipped", "not-reached", "error")


@dataclass
class Step:
    name: str  # what the report calls it: "check-loss", "search", "probe"
    command: str = ""  # the command line that reproduces the step on its own ("" when there is none: a callback's stage)
    state: str = "run"  # run | skipped | not-reached | error
    verdict: dict[str, Any] | None = None  # output.files.write_run's return value, for state "run"
    note: str = ""  # why it was skipped / not reached, or the error message
    seconds: float | None = None  # wall-clock time of the step
    result: Any = field(default=None, repr=False, compare=False)  # its nndiag Result, when it ran in this process

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown step state {self.state!r}; expected one of {STATES}")
        if self.state == "run" and not isinstance(self.verdict, dict):
            raise ValueError(f"step {self.name!r} ran but has no verdict dict")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Step":
        return cls(**{k: raw[k] for k in ("name", "command", "state", "verdict", "note", "seconds") if k in raw})

    @property
    def status(self) -> str:
        """pass | warn | fail for a step that ran, else its state."""
        return str(self.verdict.get("status", "fail")) if self.state == "run" and self.verdict else self.state

    @property
    def findings(self) -> list[dict[str, Any]]:
        return list((self.verdict or {}).get("findings") or [])

    @property
    def outputs(self) -> dict[str, Any]:
        return dict((self.verdict or {}).get("outputs") or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "status": self.status,
            "note": self.note,
            "seconds": self.seconds,
            "verdict": self.verdict,
        }


def as_steps(steps: list[Step | dict[str, Any]]) -> list[Step]:
    return [s if isinstance(s, Step) else Step.from_dict(s) for s in steps]


def overall_status(steps: list[Step | dict[str, Any]]) -> str:
    """The worst of the steps that ran ('fail' > 'warn' > 'pass'); an errored step counts as 'fail'."""
    statuses = {s.status for s in as_steps(steps)}
    if statuses & {"fail", "error"}:
        return "fail"
    return "warn" if "warn" in statuses else "pass"


def stopping_step(steps: list[Step | dict[str, Any]]) -> Step | None:
    """The step that stopped babysit: the last one that failed or errored before a not-reached step."""
    failed = None
    for step in as_steps(steps):
        if step.status in ("fail", "error"):
            failed = step
        elif step.state == "not-reached" and failed is not None:
            return failed
    return None


@dataclass
class Diagnosis:
    """Every step's findings (each with its `step`), their root causes, and which cause each finding belongs to.

    A later step that reads an earlier one's output finds the same things again (curves reads train's own log):
    `repeats` maps such a finding to the first one that said the same (same code and message), so that the
    reports show it once and point the repeat to it."""

    findings: list[dict[str, Any]]
    causes: list[RootCause]
    roles: dict[tuple[int, int], tuple[int, str]]  # (step index, finding index) -> (cause number, "evidence" | "explained")
    keys: list[tuple[int, int]] = field(default_factory=list)  # the (step index, finding index) of each of `findings`
    repeats: dict[int, int] = field(default_factory=dict)  # index in `findings` -> the index of the first one that says the same

    def role(self, step_index: int, finding_index: int) -> tuple[int, str] | None:
        return self.roles.get((step_index, finding_index))

    def repeat_of(self, step_index: int, finding_index: int) -> tuple[int, int] | None:
        """The (step index, finding index) of the earlier finding this one repeats, or None."""
        key = (step_index, finding_index)
        if key not in self.keys:
            return None
        first = self.repeats.get(self.keys.index(key))
        return self.keys[first] if first is not None else None

    def once(self, indices: list[int]) -> list[tuple[int, list[str]]]:
        """`indices` of `findings` with repeats folded into their first: (index, the steps that repeat it), in order."""
        shown: dict[int, list[str]] = {}
        for i in indices:
            first = self.repeats.get(i, i)
            also = shown.setdefault(first, [])
            if first != i:
                also.append(str(self.findings[i].get("step")))
        return list(shown.items())

    def title(self, number: int) -> str:
        return self.causes[number - 1].title

    def shown_advice(self, step_index: int, finding_index: int, finding: dict[str, Any]) -> str:
        """A finding's advice, unless a root cause explains the finding: then that cause is named instead."""
        role = self.role(step_index, finding_index)
        if role and role[1] == "explained":
            return f"Explained by root cause {role[0]} ({self.title(role[0])}): fix that first."
        return str(finding.get("advice", ""))

    def cause_dicts(self) -> list[dict[str, Any]]:
        return [{"rank": n, **c.to_dict(self.findings)} for n, c in enumerate(self.causes, 1)]


def diagnose(steps: list[Step | dict[str, Any]], audience: str = "recipe") -> Diagnosis:
    """Rank the findings of every step that ran into root causes, their fixes in the words of `audience` (pure)."""
    findings, keys = [], []
    for si, step in enumerate(as_steps(steps)):
        for fi, finding in enumerate(step.findings):
            findings.append({**finding, "step": step.name})
            keys.append((si, fi))
    causes = rank(findings, audience)
    roles = {keys[i]: role for i, role in enumerate(cause_of(findings, causes)) if role is not None}
    first: dict[tuple[str, str], int] = {}
    repeats = {}
    for i, f in enumerate(findings):
        said = (str(f.get("code")), str(f.get("message")))
        if said in first and findings[first[said]]["step"] != f["step"]:
            repeats[i] = first[said]
        first.setdefault(said, i)
    return Diagnosis(findings, causes, roles, keys, repeats)


def summary(command: str, source: str, steps: list[Step], *, metrics: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The combined verdict of a run of steps (see the module docstring). Pure."""
    diagnosis = diagnose(steps, audience_of(source))
    findings = [{**f, "explained_by": cause} for f, cause in zip(diagnosis.findings, explained_by(diagnosis.findings, diagnosis.causes))]
    return verdict_object(
        command,
        source,
        overall_status(steps),
        findings,
        {"steps": {s.name: s.status for s in steps}, **metrics},
        outputs,
        root_causes=diagnosis.cause_dicts(),
        steps=[s.to_dict() for s in steps],
    )


class Run:
    """The steps of one diagnosis and the folder they are written to. `folder` is a path, or a function that
    makes one when the first step is written (a callback that never runs a step writes nothing)."""

    def __init__(
        self, command: str, source: str, folder: Path | Callable[[], Path], *, plots: bool = True, context: dict[str, str] | None = None
    ):
        self.command, self.source, self.plots = command, source, plots
        self.context: dict[str, str] = dict(context or {})
        self.steps: list[Step] = []
        self._folder = folder

    @property
    def folder(self) -> Path | None:
        """The run's folder, or None while no step has been written (and none was given)."""
        return self._folder if isinstance(self._folder, Path) else None

    def ensure_folder(self) -> Path:
        if not isinstance(self._folder, Path):
            self._folder = self._folder()
        return self._folder

    def add(self, name: str, result: Any, seconds: float | None = None, command: str = "") -> Step:
        """A step that ran: its files into the next sub-folder (01-name/, 02-name/, ...)."""
        folder = self.ensure_folder() / f"{len(self.steps) + 1:02d}-{name}"
        verdict = files.write_run(result, folder, plots=self.plots)
        step = Step(name, command, "run", verdict, seconds=seconds, result=result)
        self.steps.append(step)
        return step

    def skip(self, name: str, note: str, state: str = "skipped", command: str = "", seconds: float | None = None) -> Step:
        """A step that did not run (skipped, not-reached) or could not (error), with why."""
        step = Step(name, command, state, note=note, seconds=seconds)
        self.steps.append(step)
        return step

    def timed(self, name: str, work: Callable[[], Any], command: str = "") -> Step:
        """Run `work` (a function returning a Result) and add it as step `name`, with its time."""
        started = time.perf_counter()
        result = work()
        return self.add(name, result, time.perf_counter() - started, command)

    @property
    def status(self) -> str:
        return overall_status(self.steps)

    @property
    def results(self) -> dict[str, Any]:
        """{step name: its Result} for the steps that ran in this process."""
        return {s.name: s.result for s in self.steps if s.result is not None}

    def summary(self, metrics: dict[str, Any] | None = None, reports: dict[str, Path] | None = None) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        if self.folder is not None:
            outputs = {
                "folder": str(self.folder),
                "summary": str(self.folder / "summary.json"),
                **{f"report_{kind}": str(path) for kind, path in (reports or {}).items()},
                "steps": {s.name: s.verdict["outputs"]["summary"] for s in self.steps if s.verdict},
            }
        return summary(self.command, self.source, self.steps, metrics=metrics or {}, outputs=outputs)

    def result(self, summary: dict[str, Any]) -> "RunResult":
        """The run as one Result: every step's findings (each message led by its step), the combined summary."""
        return RunResult.of(summary, folder=self.folder, steps=list(self.steps), context=self.context)


@dataclass
class RunResult(Result):
    """The Result of a run of several steps (nndiag.watch, a trainer callback): `findings` are every step's (each message
    led by `[step]`), `root_causes` the ranked causes, `to_dict()` the combined summary (summary.json), `results` each
    step's own Result."""

    summary: dict[str, Any] = field(default_factory=dict)  # the combined verdict, as summary.json holds it
    folder: Path | None = None
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def of(cls, summary: dict[str, Any], *, folder: Path | None, steps: list[Step], context: dict[str, str]) -> "RunResult":
        from nndiag.findings import Finding, Verdict

        findings = [
            Finding(f["code"], f["severity"], f"[{f['step']}] {f['message']}", f["advice"], f.get("evidence") or {})
            for f in summary.get("findings", [])
        ]
        return cls(
            str(summary.get("command", "run")),
            Verdict(findings),
            metrics=summary.get("metrics", {}),
            context=context,
            source=str(summary.get("recipe", "python")),
            outputs=summary.get("outputs", {}),
            summary=summary,
            folder=folder,
            steps=steps,
        )

    @property
    def status(self) -> str:
        return str(self.summary.get("status", self.verdict.status))

    @property
    def root_causes(self) -> list[dict[str, Any]]:
        """The ranked root causes (most likely first): cause, title, severity, fix, evidence, explains."""
        return list(self.summary.get("root_causes") or [])

    @property
    def results(self) -> dict[str, Any]:
        """{step name: its Result}."""
        return {s.name: s.result for s in self.steps if s.result is not None}

    def to_dict(self) -> dict[str, Any]:
        return self.summary

    def save(self, folder: str | Path | None = None, plots: bool = True) -> Path:
        """Copy the run's folder to `folder` (it is already written; without a folder, return where it is)."""
        import shutil

        if self.folder is None:
            raise ValueError("this run wrote no folder (no step ran)")
        if folder is None or Path(folder).resolve() == self.folder.resolve():
            return self.folder
        shutil.copytree(self.folder, Path(folder), dirs_exist_ok=True)
        return Path(folder)

"""Findings, verdicts and exit codes: the contract CI jobs and other programs rely on.

A diagnostic decides by returning a `Verdict`: a list of `Finding`s, each with a stable code from
`CODES`, a severity, a one-sentence message, advice on what to do next, and the numbers behind it.

May import: nndiag.codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nndiag.codes import codes_by_command

# Every finding code a user can see, by the command that raises it. Stable: relied on by CI scripts;
# add codes, never rename them. Each is described in the registry (nndiag.codes), the one source of
# truth for its meaning, rule, thresholds, source and advice (`nndiag explain CODE`).
CODES: dict[str, tuple[str, ...]] = codes_by_command()
ALL_CODES = frozenset(code for codes in CODES.values() for code in codes)

SEVERITIES = ("info", "warn", "fail")  # info never changes the status; warn -> "warn"; fail -> "fail"

# CS231n: "a loss above ~3x the initial one means stop early". Every divergence rule uses this factor.
DIVERGENCE_FACTOR = 3.0

EXIT_OK = 0  # pass or warn
EXIT_FAIL = 1  # at least one finding of severity "fail"
EXIT_BAD_INPUT = 2  # unreadable recipe, unknown key, bad value, missing file, malformed CSV
EXIT_CRASH = 3  # nndiag (or the user's own model/data code) crashed: the traceback is on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it): what finished is kept


@dataclass
class Finding:
    code: str  # one of ALL_CODES
    severity: str  # one of SEVERITIES
    message: str  # what was seen, with the numbers
    advice: str  # what to do next
    evidence: dict[str, Any] = field(default_factory=dict)  # the numbers behind the message

    def __post_init__(self) -> None:
        if self.code not in ALL_CODES:
            raise ValueError(f"unknown finding code {self.code!r}; add it to the registry (nndiag/codes.py) first")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; expected one of {SEVERITIES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'fail' if any finding fails, else 'warn' if any warns, else 'pass'."""
        severities = {f.severity for f in self.findings}
        if "fail" in severities:
            return "fail"
        if "warn" in severities:
            return "warn"
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self.status == "fail" else EXIT_OK

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def add(self, code: str, severity: str, message: str, advice: str, **evidence: Any) -> Finding:
        finding = Finding(code, severity, message, advice, evidence)
        self.findings.append(finding)
        return finding

    def extend(self, other: "Verdict") -> None:
        self.findings.extend(other.findings)

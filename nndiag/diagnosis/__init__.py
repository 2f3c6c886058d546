"""A diagnosis made of several steps: a run of steps written to one folder with its combined verdict
(run), the root causes ranked over every step's findings (root_cause), report.md / report.html and
the terminal summary (report), and `nndiag babysit`, the whole recipe in order (babysit). Named
`diagnosis`, not `babysit`, so that no module shadows the API function `nndiag.babysit`.

May import: nndiag.errors, nndiag.formatting, nndiag.findings, nndiag.result, nndiag.output, nndiag.config,
nndiag.training, nndiag.diagnostics.
"""

"""One module per step of the recipe (check_data, check_loss, overfit_small, lr_find, search, train, curves,
probe), with their helpers beside them: check-loss's structure and loss checks (structure), the bugs only a
hand-written loop has, seen through its hooks (loop), the defaults of every option (defaults), lr-find's trial runs
(lr_trials), reading training logs for curves (curve_logs), search's Optuna study and worker processes
(search_study, search_workers), and the weight-init lecture's experiment (probe_init). Each step
measures (tables of numbers), decides (a pure function from those numbers to a Verdict) and returns a
Result; it never prints, never imports Typer or Rich, never writes files (search's study journal aside:
it is the study's state, so that a search resumes).

May import: nndiag.errors, nndiag.formatting, nndiag.processes, nndiag.codes, nndiag.findings, nndiag.result, nndiag.config,
nndiag.zoo, nndiag.training.
"""

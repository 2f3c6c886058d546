"""Presenting a Result: the run folder and its files, written atomically (files), the terminal views
(terminal), the PNG figures (plots) and the training progress bar (progress). It reads Results by
duck typing and sits below nndiag.result, which saves and plots itself through it; it never measures
or decides.

May import: nndiag.errors, nndiag.formatting, nndiag.processes.
"""

"""nndiag inside the training code people already have: `nndiag.watch` for a hand-written loop, a PyTorch
Lightning callback and a Hugging Face `TrainerCallback`, each running the recipe's checks without leaving it.

    with nndiag.watch(model, optimizer, probe_every=50) as w: ...   # nndiag/integrations/loop.py

    from nndiag.integrations.lightning import NNDiagCallback       # pip install 'nndiag[lightning]'
    trainer = lightning.pytorch.Trainer(callbacks=[NNDiagCallback(probe_every=50, fail_on="fail")])

    from nndiag.integrations.transformers import NNDiagCallback    # pip install 'nndiag[hf]'
    trainer = transformers.Trainer(..., callbacks=[NNDiagCallback(num_classes=3)])

The callbacks do four things, through the session the watch uses too (session.py), and write the CLI's
run folder (one sub-folder per stage, as babysit does, plus one combined summary.json and the report):
  check-loss  before the first training step, on the first `batches` training batches, scored the way
              the trainer scores them (the LightningModule's own training_step; the HF model's own loss)
  probe       every `probe_every` optimizer steps: the probe's per-layer statistics and rules
  loop        the watch's loop checks (hooks on the model and the trainer's optimizer) over the whole fit
  curves      at the end, the curves verdict on what the trainer logged, with the LR of every step

`fail_on="fail"` (or "warn") stops training with `DiagnosisFailed` as soon as a stage reaches that
status (a CI job gates on it). `nndiag.lr_find(module)` (and check_loss / overfit_small / probe) also
take a LightningModule directly: see nndiag/integrations/lightning.py.

Importing this package imports neither framework, nor torch; importing a submodule without its
framework raises an ImportError that names the `pip install` line.

May import: nndiag.errors, nndiag.formatting, nndiag.processes, nndiag.findings, nndiag.result, nndiag.output, nndiag.config,
nndiag.training, nndiag.diagnostics, nndiag.diagnosis.
"""

from __future__ import annotations

from typing import Any

EXTRAS = {  # framework -> (the extra that installs it, what it is)
    "lightning": ("lightning", "PyTorch Lightning (the `lightning` or `pytorch-lightning` package)"),
    "transformers": ("hf", "Hugging Face Transformers with Accelerate (the HF Trainer needs both)"),
}


def missing(framework: str, error: BaseException | None = None) -> ImportError:
    """The ImportError a user sees when an integration's framework is not installed: it names the pip line."""
    extra, what = EXTRAS[framework]
    why = f" ({type(error).__name__}: {error})" if error is not None else ""
    return ImportError(
        f"nndiag.integrations.{framework} needs {what}, which could not be imported{why}. Install it with: pip install 'nndiag[{extra}]'"
    )


def lightning_base(obj: Any, name: str) -> type | None:
    """The Lightning class `name` (LightningModule, LightningDataModule) in obj's class hierarchy, from
    lightning.pytorch or pytorch_lightning, told by class names: Lightning is not imported."""
    for cls in type(obj).__mro__:
        if cls.__name__ == name and cls.__module__.split(".")[0] in ("lightning", "pytorch_lightning"):
            return cls
    return None


class DiagnosisFailed(RuntimeError):
    """Raised by an integration's callback with `fail_on` set, when a stage's verdict reaches that
    status: training stops. The message names the stage, the findings and the run folder.

    Attributes: `stage` (check-loss | probe | loop | curves), `status` (warn | fail), `findings` (the stage's
    nndiag Findings), `summary` (the combined summary.json object), `folder` (the run folder)."""

    def __init__(self, message: str, *, stage: str, status: str, findings: list[Any], summary: dict[str, Any], folder: Any):
        super().__init__(message)
        self.stage, self.status, self.findings, self.summary, self.folder = stage, status, findings, summary, folder


__all__ = ["DiagnosisFailed", "lightning_base", "missing"]

"""`nndiag.watch`: nndiag inside a hand-written PyTorch training loop, through PyTorch's own hooks.

    with nndiag.watch(model, optimizer, probe_every=50, out="runs/exp1") as w:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            w.log(loss=loss)                        # optional; and w.log(val_loss=..., val_acc=...) when validating
    w.result.status, w.result.findings, w.result.root_causes

The loop needs no other change. On entering, `Watch` attaches forward hooks to the model and step hooks to
the optimizer (nndiag.diagnostics.loop.Recorder; the probe's hooks on the probed steps only); on leaving,
however the block ends, it removes them, then writes the callbacks' run folder
(`runs/<model class>/watch-<timestamp>/`, or `out=`):
  check-loss  the loop's first batch, before the first optimizer step: its loss against the loss an untrained
              model should have (ln C for softmax cross-entropy; C and the targets from a torch.nn loss module
              called on the model's output, from the output's own loss, or from the output's gradient, which a
              softmax cross-entropy makes (softmax - onehot) / N; `num_classes=` overrides)
  probe       every `probe_every` optimizer steps
  loop        the bugs only a loop can have: gradients that accumulate, no optimizer step, weights that never
              change, eval mode while training, no gradient at the step, the same batch at every step
  curves      the curves verdict over what `w.log` got (else the loss the hooks read: a loss module's or the
              output's) and the LR of every step, read from the optimizer
and summary.json, report.md, report.html with the ranked root causes, as babysit writes them. `w.result` is
the combined Result. With `fail_on`, a stage reaching it raises DiagnosisFailed out of the loop: check-loss
from the first optimizer.step() (before it changes the weights), the probe at the probed step, loop and curves
when the block ends. An exception of the loop itself passes through unchanged, after the folder is written
(a loss.backward() that raised because the loss has no graph is the loop stage's no-gradient-at-step).

Nothing the loop computes changes: the hooks draw no random numbers and change no value, so losses are
bit-identical with and without the watch when the probe is off (the probe copies the weights on its steps).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nndiag.diagnostics.defaults import CHECK_LOSS_TOLERANCE
from nndiag.errors import BadInput
from nndiag.integrations import DiagnosisFailed
from nndiag.integrations.session import MetricLog, Options, Session, timed

COMMAND = "watch"  # names the default run folder: runs/<model class>/watch-<timestamp>/
LOGGER = "nndiag.watch"  # the logging.Logger the status lines go to
LOGGED = {  # w.log's keywords -> nndiag's series
    "loss": "train_loss",
    "train_loss": "train_loss",
    "acc": "train_acc",
    "train_acc": "train_acc",
    "val_loss": "val_loss",
    "val_acc": "val_acc",
}


def _number(value: Any) -> float | None:
    """A logged value as a float (a one-element tensor, a number), else None."""
    if hasattr(value, "detach"):
        return float(value.detach()) if value.numel() == 1 else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a wrapper (accelerate's AcceleratedOptimizer, Lightning's LightningOptimizer), or BadInput."""
    import torch

    seen = 0
    while not isinstance(optimizer, torch.optim.Optimizer) and seen < 4:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None:
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise BadInput(
            f"expected the torch.optim.Optimizer your loop steps, got {type(optimizer).__name__}: nndiag counts the steps with its "
            "step hooks",
            where="optimizer",
        )
    return optimizer


class Watch:
    """The context manager `nndiag.watch` returns (see the module docstring). After the block: `result` (the
    combined Result), `summary` (summary.json's object), `folder`, `status`, `results` ({stage: Result})."""

    def __init__(self, model: Any, optimizer: Any, options: Options):
        from torch import nn

        if not isinstance(model, nn.Module):
            raise BadInput(f"expected the torch.nn.Module your loop trains, got {type(model).__name__}", where="model")
        self.model, self.optimizer, self.options = model, _torch_optimizer(optimizer), options
        logger = logging.getLogger(LOGGER)
        self.session = Session(COMMAND, options, lambda level, message: logger.log(level, message))
        self.summary: dict[str, Any] = {}
        self._metrics = MetricLog()
        self._pending_check = False  # check-loss waits for the first batch's loss (w.log) or the second step
        self._logged_first: float | None = None  # the first loss w.log got before the second optimizer step
        self._active = False

    # -- the context manager ---------------------------------------------------------------------

    def __enter__(self) -> "Watch":
        self.start()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if error is None:
            self.stop()  # with fail_on, may raise DiagnosisFailed
            return False
        try:
            self.stop(error)
        except Exception as own:  # writing the folder failed: the loop's own exception still goes on, unchanged
            logging.getLogger(LOGGER).error(f"nndiag.watch could not write its run folder ({type(own).__name__}: {own})")
        return False  # the loop's own exception passes through

    def start(self) -> "Watch":
        """Attach the hooks (what `with` does on entering)."""
        if self._active:
            raise BadInput("this watch is already running; a watch watches one loop at a time", where="watch")
        self.session.begin(type(self.model).__name__)
        self.summary, self._metrics = {}, MetricLog()
        self._pending_check, self._logged_first = False, None
        self.session.watch_loop(
            self.model,
            self.optimizer,
            first_batch=self.options.check_loss,
            on_step=self._stepped,
            on_first_batch=self._first_batch,
            strict=self.options.fail_on is not None,
        )
        self._active = True
        return self

    def stop(self, error: BaseException | None = None) -> dict[str, Any]:
        """Remove the hooks and write the run folder (what `with` does on leaving); `error`: what ended the loop."""
        if not self._active:
            return self.summary
        self._active = False
        session = self.session
        recorder = session.recorder
        try:
            if isinstance(error, DiagnosisFailed):
                session.close_hooks()
                self.summary = session.finish("completed")  # stopped is already fail_on:<stage>
                return self.summary
            lrs = session.lr_rows()
            losses = recorder.loss_series() if recorder is not None else []
            if self.options.check_loss and recorder is not None and recorder.steps == 0 and recorder.first_ready():
                self._pending_check = True  # no optimizer step ran: the first batch was seen all the same
            if self._pending_check and recorder is not None:
                session.guarded("check-loss", lambda: self._check_loss(final=True))
            session.close_probe()
            session.close_loop(error if isinstance(error, Exception) else None)
            if self.options.curves:
                session.guarded("curves", lambda: self._curves(lrs, losses))
            stopped = "completed" if error is None else f"exception: {type(error).__name__}"
            self.summary = session.finish(stopped)
            if error is None:
                session.raise_if_reached()
            return self.summary
        finally:
            session.close_hooks()

    # -- what the loop tells -------------------------------------------------------------------

    def log(self, loss: Any = None, **values: Any) -> None:
        """Record what the loop measured at this optimizer step: `loss` (the training loss; `train_loss=` too),
        `val_loss=`, `val_acc=`, `acc=` / `train_acc=`, `epoch=`; any other number becomes a column of metrics.csv.
        Tensors stay on their device until the end (no sync per call)."""
        if not self._active:
            raise BadInput("w.log was called outside the watch's `with` block", where="log")
        if loss is not None:
            values["loss"] = loss
        epoch = values.pop("epoch", None)
        recorder = self.session.recorder
        step = (recorder.start_step + recorder.steps) if recorder is not None else self.session.optimizer_steps
        for key, value in values.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise BadInput(f"w.log takes names as keywords, got {key!r}", where="log")
            series = LOGGED.get(key, key)
            if series == "lr":
                raise BadInput("w.log(lr=...) is not needed: the watch reads the LR of every step from the optimizer", where="log")
            if series == "step":
                raise BadInput(
                    "w.log(step=...) is not needed: the watch counts the optimizer steps itself (metrics.csv's step column); "
                    "log your own counter under another name (w.log(batch=i))",
                    where="log",
                )
            if series == "train_loss" and recorder is not None:
                recorder.note_logged_loss(value)
                first = _number(value) if self._logged_first is None and recorder.steps <= 1 else None
                if first is not None:
                    self._logged_first = first
                    if self._pending_check:
                        self.session.guarded("check-loss", lambda: self._check_loss(final=False))
            self._metrics.add(step, epoch, series, value)

    # -- the stages --------------------------------------------------------------------------

    def _stepped(self, step: int) -> None:
        """After each optimizer step (the optimizer's post hook): the probe; check-loss at the latest after step 2."""
        if self._pending_check and step >= 2:
            self.session.guarded("check-loss", lambda: self._check_loss(final=True))
        self.session.stepped(self.model, step, self.optimizer)

    def _first_batch(self) -> None:
        """The first batch's logits are known (before the first step, or right after it)."""
        if not self.options.check_loss:
            return
        self._pending_check = True
        self.session.guarded("check-loss", lambda: self._check_loss(final=False))

    def _check_loss(self, final: bool) -> None:
        """check-loss on the first batch, once its loss is known (from the hooks, else from w.log); `final`: decide now."""
        from nndiag.diagnostics import loop

        recorder = self.session.recorder
        if not self._pending_check or recorder is None or recorder.first is None:
            return
        _, _, loss, _, _ = loop.first_batch_expected(recorder.first, self.options.num_classes)
        if loss is None and self._logged_first is None:
            if not final:
                return  # wait for w.log(loss=...) or the second optimizer step
            self._pending_check = False
            self.session.skip(
                "check-loss",
                "the first batch's loss was not seen: the loss is neither a torch.nn loss module called on the model's output nor "
                "the output's own loss, and w.log(loss=...) was not called before the second optimizer step",
            )
            return
        self._pending_check = False
        result, seconds = timed(
            lambda: loop.first_batch_result(
                recorder.first,
                num_classes=self.options.num_classes,
                optimizer=self.optimizer,
                logged_loss=self._logged_first,
                tolerance=CHECK_LOSS_TOLERANCE,
            )
        )
        self.session.add("check-loss", result, seconds)  # raises DiagnosisFailed when fail_on is reached

    def _curves(self, lrs: list[tuple[int, float]], losses: list[tuple[int, float]]) -> None:
        from nndiag.integrations.session import curves_result

        metrics = self._metrics
        if not metrics.has("train_loss"):
            for step, value in losses:  # the loss the hooks read (a loss module's, or the model output's)
                metrics.add(step, None, "train_loss", value)
        for step, lr in lrs:
            if math.isfinite(lr):
                metrics.add(step, None, "lr", lr)
        result, why = curves_result(metrics.frame())
        if result is None:
            self.session.skip("curves", f"{why} (w.log(loss=...) records it)")
            return
        self.session.add("curves", result, 0.0, stop=False)

    # -- what a user reads afterwards ---------------------------------------------------------

    @property
    def result(self) -> Any:
        """The combined Result: status, findings (each led by its stage), root_causes, metrics, outputs."""
        if self._active:
            raise BadInput("w.result is ready when the watch's `with` block has ended", where="result")
        return self.session.result(self.summary or None)

    @property
    def folder(self) -> Any:
        return self.session.folder

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def results(self) -> dict[str, Any]:
        return self.session.run.results


def watch(model: Any, optimizer: Any, **options: Any) -> Watch:
    """A Watch over `model` and `optimizer` with these options (nndiag.integrations.session.Options)."""
    return Watch(model, optimizer, Options(**options))

"""nndiag in the Hugging Face `Trainer`: a TrainerCallback.

    from nndiag.integrations.transformers import NNDiagCallback
    callback = NNDiagCallback(probe_every=50, fail_on="fail")
    Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=[callback]).train()
    callback.summary["status"], callback.folder         # also runs/<Model>/hf-<timestamp>/summary.json

What it does (see nndiag/integrations/session.py for the run folder and the stages):
  on_train_begin     check-loss on the first `batches` training batches: the Trainer's train dataset and
                     collator (its DataLoader's `dataset` and `collate_fn`, unused columns already removed),
                     per_device_train_batch_size, in a private seeded order; scored by the model's own loss
                     (the batch dict passed as keyword arguments, `labels` included), so C comes from the
                     logits and the rule expects ln C. The model, its gradients and every RNG are handed back.
  on_optimizer_step  right after each optimizer step (gradients still there, before zero_grad): the probe
                     arms / collects every `probe_every` steps.
  loop stage         from on_train_begin (after check-loss) to on_train_end, nndiag.watch's hooks on the model
                     and the Trainer's torch optimizer: the loop checks and the LR of every step.
  on_train_end       the probe stage; the curves verdict on `state.log_history` (x = step; `loss` ->
                     train_loss, `eval_loss` -> val_loss, `eval_accuracy` -> val_acc; the names are options);
                     the combined summary.json; the status logged as a line (logger `transformers.nndiag`,
                     a warning when not pass).
With `fail_on`, a stage reaching it raises `DiagnosisFailed` out of `trainer.train()` (check-loss: before
the first step; probe: at the probed step; loop and curves: when training ends), after the hooks come off
the model and the report is written. The HF Trainer has no exception hook: if training itself raises, the
hooks stay on the model and what was probed so far is not written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nndiag.integrations import missing

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise missing("transformers", exc) from None

from nndiag.integrations import DiagnosisFailed
from nndiag.integrations import session as sessions
from nndiag.integrations.session import MetricLog, SessionCallback

log = logging.getLogger("transformers.nndiag")  # shown through the transformers logger's handler


@dataclass(kw_only=True, eq=False)
class NNDiagCallback(SessionCallback, TrainerCallback):
    """check-loss at train begin, the probe every `probe_every` steps, the curves verdict at train end;
    the CLI's run folder and summary.json.

    Options (keyword only; their one definition is nndiag.integrations.session.Options, with the Trainer's
    metric names as defaults):
      check_loss   run check-loss on the first `batches` training batches (default True, 10 batches)
      num_classes  C for check-loss's ln C, overriding what the logits say (default None)
      probe_every  probe every N optimizer steps (default None: never)
      loop         the loop checks of nndiag.watch over the whole fit (default True)
      curves       the curves verdict on state.log_history at train end (default True)
      train_loss, val_loss, train_acc, val_acc   their keys in log_history (default loss, eval_loss, None, eval_accuracy)
      fail_on      None | "fail" | "warn": raise DiagnosisFailed (stopping training) when a stage reaches it
      out          the run folder (default runs/<model class>/hf-<timestamp>/, NNDIAG_RUNS moves runs/)
      name         names the default run folder instead of the model's class
      plots        write the PNG figures (default True)
      seed         seeds check-loss's private batch order (default 0)
    After training: `summary` (the combined summary.json object), `result` (the same as one Result, with
    root_causes), `folder`, `results` ({stage: Result}), `status`.
    """

    train_loss: str | None = "loss"  # the key of the training loss in state.log_history
    val_loss: str | None = "eval_loss"  # the key of the validation loss
    train_acc: str | None = None  # the key of the training accuracy (the Trainer logs none by default)
    val_acc: str | None = "eval_accuracy"  # the key of the validation accuracy (what compute_metrics returns as "accuracy")

    COMMAND = "hf"
    LOGGER = log.name

    # -- TrainerCallback hooks ------------------------------------------------------------------

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        self.session.begin(type(model).__name__ if model is not None else "model")
        self.summary = {}
        if self.options.check_loss:
            if state.global_step > 0:
                self.session.skip(
                    "check-loss", f"training resumed at step {state.global_step}: the weights are not at their initialisation"
                )
            else:
                try:
                    self.session.guarded("check-loss", lambda: self._check_loss(args, model, train_dataloader, optimizer))
                except DiagnosisFailed:
                    self._stopped()
                    raise
        if model is not None and optimizer is not None:
            torch_optimizer = _unwrapped(optimizer)
            self.session.guarded("loop", lambda: self.session.watch_loop(model, torch_optimizer, start_step=state.global_step))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        step = state.global_step + 1  # the Trainer counts the step after this hook
        try:
            self.session.stepped(model, step, kwargs.get("optimizer"))  # with fail_on, a probed step may raise DiagnosisFailed
        except DiagnosisFailed:
            self._stopped()
            raise

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.optimizer_steps = state.global_step
        lrs = self.session.lr_rows()
        self.session.close_probe()
        self.session.close_loop()
        if self.options.curves:
            self.session.guarded("curves", lambda: self._curves(state.log_history, lrs))
        self.summary = self.session.finish("completed")
        self.session.raise_if_reached()

    def _stopped(self) -> None:
        """fail_on stops the Trainer (the Trainer has no exception hook): the hooks come off the model at once, and the
        report and summary.json are written with what ran, as watch and the Lightning callback do."""
        self.session.close_hooks()
        self.summary = self.session.finish("completed")  # stopped is already fail_on:<stage>

    # -- the stages -----------------------------------------------------------------------------

    def _check_loss(self, args: Any, model: Any, loader: Any, optimizer: Any) -> None:
        if model is None or loader is None or getattr(loader, "dataset", None) is None:
            self.session.skip("check-loss", "the Trainer passed no model or training DataLoader to the callback")
            return
        data = sessions.private_loader(loader, args.per_device_train_batch_size, self.options.seed)
        optimizer = _unwrapped(optimizer) if optimizer is not None else None
        result, seconds = sessions.timed(lambda: sessions.check_loss(model, data, step=None, optimizer=optimizer, options=self.options))
        self.session.add("check-loss", result, seconds)

    def _curves(self, history: list[dict[str, Any]], lrs: list[tuple[int, float]]) -> None:
        metrics = MetricLog()
        for step, lr in lrs:  # the LR of every optimizer step (log_history's learning_rate is every logging_steps only)
            metrics.add(step, None, "lr", lr)
        keys = {name: series for series, name in self.options.names.items() if name}
        for entry in history:
            step = entry.get("step")
            if step is None:
                continue
            for key, series in keys.items():
                if key in entry:
                    metrics.add(int(step), entry.get("epoch"), series, entry[key])
        (result, why), seconds = sessions.timed(lambda: sessions.curves_result(metrics.frame()))
        if result is None:
            self.session.skip("curves", f"{why} (log_history keys: {', '.join(sorted({k for e in history for k in e})) or 'none'})")
            return
        self.session.add("curves", result, seconds, stop=False)


def _is_plain(optimizer: Any) -> bool:
    """A torch optimizer nndiag can make a fresh copy of (not a wrapper such as accelerate's)."""
    return type(optimizer).__module__.startswith("torch.")


def _unwrapped(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's AcceleratedOptimizer (its `optimizer`)."""
    while optimizer is not None and not _is_plain(optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer

"""nndiag in PyTorch Lightning: a callback for `Trainer.fit`, and the Python API on a LightningModule.

    from nndiag.integrations.lightning import NNDiagCallback
    trainer = Trainer(max_epochs=20, callbacks=[NNDiagCallback(probe_every=50, fail_on="fail")])
    trainer.fit(module, train_loader, val_loader)
    callback.summary["status"], callback.folder         # also runs/<Module>/lightning-<timestamp>/summary.json

    nndiag.lr_find(module)                               # its configure_optimizers, training_step and train_dataloader
    nndiag.lr_find(module, data=loader)                  # or a DataLoader / LightningDataModule of your own

Works with `lightning.pytorch` or `pytorch_lightning`, whichever is installed (`lightning` first).

**The callback** (see nndiag/integrations/session.py for the run folder and the stages):
  on_train_start      check-loss on the first `batches` training batches (the trainer's dataset and
                      collate function, in a private seeded order), through the module's own
                      `training_step(batch, batch_idx)`: it may return the loss or a dict with "loss"
                      (and "logits" / "targets"; without them, the logits are the output of the module's
                      own forward, or of the child it calls, captured by a forward hook: C follows from
                      them; `num_classes=` overrides; else the `not-checked` finding). While nndiag scores,
                      `self.log` / `self.log_dict` are
                      silenced and torchmetrics states are put back, so the trainer's logs are untouched;
                      parameters, buffers, gradients, train/eval flags and every RNG are handed back.
                      Lightning sets the DataLoaders up after on_fit_start, so this is the first hook
                      with data; no training step has run yet.
  on_train_batch_end  after each optimizer step: the probe arms / collects every `probe_every` steps;
                      the loss training_step returned is kept (the curves' fallback when `train_loss`
                      is never logged).
  loop stage          from on_train_start (after check-loss) to the end, nndiag.watch's hooks on the module
                      and trainer.optimizers[0]: the loop checks (gradients that accumulate, eval mode,
                      the same batch, ...) and the LR of every step for the curves.
  self.log            while fitting, the module's `log` is wrapped (values passed through unchanged) to
                      record `train_loss` / `train_acc` at the optimizer step they belong to.
  on_validation_end   `val_loss` / `val_acc` from trainer.callback_metrics (also `<name>_epoch`), at the
                      optimizer step reached; the sanity check is skipped.
  on_train_end        the probe and curves stages; the combined summary.json; the status is logged as a
                      line (logger `lightning.pytorch.callbacks.nndiag`) and as `nndiag/status` (0 pass,
                      1 warn, 2 fail) to the trainer's loggers.
  on_exception        hooks removed, what was probed and logged so far written, the summary closed.
With `fail_on`, a stage reaching it raises `DiagnosisFailed` (check-loss: before the first step; probe:
at the probed step; curves: when fit ends). Manual optimization is not scored (check-loss is skipped).

**The API on a LightningModule** (`module_experiment`, hooked into nndiag.api.experiment): the step is
the module's training_step (batch hooks it overrides are applied), the optimizer what configure_optimizers
returns (an optimizer, a list, a (optimizers, schedulers) pair, a dict with "optimizer", ...; an LR
scheduler's warm-up factor is undone so the optimizer's own LR is used), and the data, when not given,
the attached trainer's datamodule or the module's own train_dataloader(). lr_find cycles the data, so a
small data set (450 examples: 15 batches of 32) still gives its 100 points.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from nndiag.errors import BadInput
from nndiag.integrations import DiagnosisFailed, lightning_base, missing

try:
    import lightning.pytorch as pl
except ImportError:
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise missing("lightning", exc) from None

from nndiag.integrations import session as sessions
from nndiag.integrations.session import STATUS_CODE, MetricLog, SessionCallback

log = logging.getLogger(f"{pl.__name__}.callbacks.nndiag")  # shown like Lightning's own lines


# --------------------------------------------------------------------------------------------
# A LightningModule as nndiag's model + step + optimizer + data
# --------------------------------------------------------------------------------------------


def overridden(module: Any, name: str) -> bool:
    """Does the module's class define `name` itself, rather than inherit Lightning's default?"""
    base = lightning_base(module, "LightningModule")
    return base is not None and getattr(type(module), name, None) is not getattr(base, name, None)


def module_experiment(
    module: Any,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    optimizer: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> Any:
    """An Experiment on a LightningModule: its training_step, configure_optimizers and data (each may be given instead)."""
    from nndiag.training.experiment import Experiment

    if step is None and loss is None:
        if not getattr(module, "automatic_optimization", True):
            raise BadInput(
                "this LightningModule uses manual optimization: its training_step runs its own backward and optimizer "
                "step, so nndiag cannot score a batch with it; pass step=... (a function (model, batch) -> loss)",
                where="step",
            )
        step = training_step_of(module)
    if optimizer is None:
        optimizer = optimizer_of(module)
    data = data_of(module) if data is None else data
    if lightning_base(data, "LightningDataModule") is not None:
        data = _datamodule_loader(data)
    return Experiment.from_objects(
        module,
        data,
        loss=loss,
        step=step,
        optimizer=optimizer,
        batch_size=batch_size or 64,
        device=device,
        seed=0 if seed is None else seed,
    )


def training_step_of(module: Any, trainer: Any = None) -> Callable[[Any, Any], Any]:
    """step(model, batch) -> model.training_step(batch, batch_idx), with the batch hooks the module
    overrides, under the trainer's precision context when there is one, `self.log` silenced and
    torchmetrics states put back afterwards."""
    counter = itertools.count()
    hooks = [
        name for name in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer") if overridden(module, name)
    ]

    def step(model: Any, batch: Any) -> Any:
        index = next(counter)
        with _quiet(model), _precision(trainer):
            for name in hooks:
                hook = getattr(model, name)
                batch = hook(batch, model.device, 0) if name == "transfer_batch_to_device" else hook(batch, 0)
            return model.training_step(batch, index)

    return step


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def _quiet(module: Any) -> Iterator[None]:
    """`self.log` / `self.log_dict` do nothing, and every torchmetrics Metric's state is as before afterwards."""
    own = {k: module.__dict__[k] for k in ("log", "log_dict") if k in module.__dict__}
    states = [(m, _metric_state(m)) for m in module.modules() if _is_metric(m)]
    module.__dict__["log"] = module.__dict__["log_dict"] = _no_log
    try:
        yield
    finally:
        for key in ("log", "log_dict"):
            if key in own:
                module.__dict__[key] = own[key]
            else:
                module.__dict__.pop(key, None)
        for metric, state in states:
            for key, value in state.items():
                setattr(metric, key, value)


_METRIC_FLAGS = ("_update_count", "_computed", "_forward_cache", "_is_synced", "_should_unsync")


def _is_metric(module: Any) -> bool:
    return isinstance(getattr(module, "_defaults", None), dict) and hasattr(module, "_update_count")


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "clone")


def _copy(value: Any) -> Any:
    if _is_tensor(value):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _metric_state(metric: Any) -> dict[str, Any]:
    return {key: _copy(getattr(metric, key)) for key in [*metric._defaults, *_METRIC_FLAGS] if hasattr(metric, key)}


@contextlib.contextmanager
def _precision(trainer: Any) -> Iterator[None]:
    plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
    context = getattr(plugin, "train_step_context", None)
    with context() if context is not None else contextlib.nullcontext():
        yield


def optimizer_of(module: Any) -> Any:
    """The (first) optimizer configure_optimizers returns, at its own LR (a scheduler's initial factor undone)."""
    import torch

    try:
        config = module.configure_optimizers()
    except Exception as exc:
        raise BadInput(
            f"calling the module's configure_optimizers() failed ({type(exc).__name__}: {exc}); pass optimizer=... "
            "(an optimizer, or a function params -> optimizer)",
            where="optimizer",
        ) from None
    found: list[Any] = []
    _collect_optimizers(config, found)
    optimizers = [o for o in found if isinstance(o, torch.optim.Optimizer)]
    if not optimizers:
        raise BadInput(f"configure_optimizers() returned no optimizer ({type(config).__name__}); pass optimizer=...", where="optimizer")
    if len({id(o) for o in optimizers}) > 1:
        raise BadInput(
            f"configure_optimizers() returned {len(optimizers)} optimizers; nndiag drives one: pass optimizer=...", where="optimizer"
        )
    optimizer = optimizers[0]
    for group in optimizer.param_groups:
        if "initial_lr" in group:  # a scheduler scaled the LR at construction (e.g. warm-up from 0)
            group["lr"] = group["initial_lr"]
    return optimizer


def _collect_optimizers(config: Any, found: list[Any]) -> None:
    """Optimizers anywhere in configure_optimizers' return value (schedulers and their dicts skipped)."""
    import torch

    if isinstance(config, torch.optim.Optimizer):
        found.append(config)
    elif isinstance(config, Mapping):
        if "optimizer" in config:
            _collect_optimizers(config["optimizer"], found)
    elif isinstance(config, (list, tuple)):
        items = config[0] if len(config) == 2 and all(isinstance(c, (list, tuple)) for c in config) else config  # ([opts], [scheds])
        for item in items:
            _collect_optimizers(item, found)


def data_of(module: Any) -> Any:
    """The training data of a module: its trainer's datamodule, else its own train_dataloader()."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        return _datamodule_loader(datamodule)
    if overridden(module, "train_dataloader"):
        try:
            return module.train_dataloader()
        except Exception as exc:
            raise BadInput(
                f"calling the module's train_dataloader() failed ({type(exc).__name__}: {exc}); pass data=...", where="data"
            ) from None
    raise BadInput(
        "this LightningModule has no train_dataloader() and no trainer with a datamodule: pass data= (a DataLoader, a "
        "LightningDataModule, a Dataset or an (X, y) pair)",
        where="data",
    )


def _datamodule_loader(datamodule: Any) -> Any:
    try:
        if lightning_base(datamodule, "LightningDataModule") is not None and getattr(datamodule, "_trainer", None) is None:
            datamodule.prepare_data()
            datamodule.setup("fit")
        return datamodule.train_dataloader()
    except Exception as exc:
        raise BadInput(
            f"getting the datamodule's train_dataloader() failed ({type(exc).__name__}: {exc}); pass data=...", where="data"
        ) from None


# --------------------------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class NNDiagCallback(SessionCallback, pl.Callback):
    """check-loss before the first step, the probe every `probe_every` steps, the curves verdict at
    the end; the CLI's run folder and summary.json (see the module docstring).

    Options (keyword only; their one definition is nndiag.integrations.session.Options):
      check_loss   run check-loss on the first `batches` training batches (default True, 10 batches)
      num_classes  C for check-loss's ln C, overriding what the logits say (default None)
      probe_every  probe every N optimizer steps (default None: never)
      loop         the loop checks of nndiag.watch over the whole fit (default True)
      curves       the curves verdict on the logged metrics when fit ends (default True)
      train_loss, val_loss, train_acc, val_acc   the names the module logs (self.log) them under
      fail_on      None | "fail" | "warn": raise DiagnosisFailed (stopping training) when a stage reaches it
      out          the run folder (default runs/<module class>/lightning-<timestamp>/, NNDIAG_RUNS moves runs/)
      name         names the default run folder instead of the module's class
      plots        write the PNG figures (default True)
      seed         seeds check-loss's private batch order (default 0)
    After fit: `summary` (the combined summary.json object), `result` (the same as one Result, with root_causes),
    `folder`, `results` ({stage: Result}), `status`.
    """

    COMMAND = "lightning"
    LOGGER = log.name

    def __post_init__(self) -> None:
        super().__post_init__()
        self._metrics = MetricLog()
        self._last_step: int | None = None
        self._unwrap: Callable[[], None] | None = None

    # -- Lightning hooks (what a user reads after fit: SessionResults' folder, status, results) ------ ------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.session.begin(type(pl_module).__name__)
        self.summary, self._metrics, self._last_step = {}, MetricLog(), trainer.global_step
        if self.options.check_loss:
            self.session.guarded("check-loss", lambda: self._check_loss(trainer, pl_module))
        if self.options.curves:
            self._record_logs(trainer, pl_module)
            self._metrics.stream_to(self.session.run.ensure_folder() / "metrics.csv")  # `nndiag curves` reads it while training runs
            self.session.write_summary()  # state running, with this process on record: a killed fit reads as one
        optimizer = trainer.optimizers[0] if trainer.optimizers and getattr(pl_module, "automatic_optimization", True) else None
        self.session.guarded("loop", lambda: self.session.watch_loop(pl_module, optimizer, start_step=trainer.global_step))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._metrics.flush()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # no optimizer step on this batch (gradient accumulation, a skipped batch)
        self._last_step = step
        if self.options.curves:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            if loss is not None:
                self._metrics.add(step, trainer.current_epoch, "returned_loss", loss)
        self.session.stepped(pl_module, step, trainer.optimizers[0] if trainer.optimizers else None)  # DiagnosisFailed: on_exception

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not self.options.curves:
            return
        logged = trainer.callback_metrics
        for series in ("val_loss", "val_acc"):
            name = self.options.names.get(series)
            value = logged.get(name, logged.get(f"{name}_epoch")) if name else None
            if value is not None:
                self._metrics.add(trainer.global_step, trainer.current_epoch, series, value)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close(trainer, pl_module, "completed")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, DiagnosisFailed):  # fail_on stopped the fit: what was logged, the report, as watch does
            self._unrecord_logs()
            self.session.close_hooks()
            self._metrics.flush(final=True)
            self.summary = self.session.finish("completed")  # stopped is already fail_on:<stage>
            return
        self._close(trainer, pl_module, f"exception: {type(exception).__name__}", exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._unrecord_logs()
        self.session.close_hooks()

    # -- the stages -----------------------------------------------------------------------------

    def _check_loss(self, trainer: Any, module: Any) -> None:
        from torch.utils.data import DataLoader

        if not getattr(module, "automatic_optimization", True):
            self.session.skip("check-loss", "the module uses manual optimization: its training_step steps the optimizer itself")
            return
        if trainer.global_step > 0:
            self.session.skip("check-loss", f"training resumed at step {trainer.global_step}: the weights are not at their initialisation")
            return
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            self.session.skip("check-loss", f"the training data is a {type(loader).__name__}, not one DataLoader")
            return
        data = sessions.private_loader(loader, None, self.options.seed)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        result, seconds = sessions.timed(
            lambda: sessions.check_loss(module, data, step=training_step_of(module, trainer), optimizer=optimizer, options=self.options)
        )
        self.session.add("check-loss", result, seconds)

    def _record_logs(self, trainer: Any, module: Any) -> None:
        """Wrap the module's `log` for this fit: train_loss / train_acc values are recorded at the optimizer
        step they belong to, then passed on unchanged (log_dict calls log)."""
        wanted = {self.options.names[s]: s for s in ("train_loss", "train_acc") if self.options.names.get(s)}
        original = module.log
        had_own = "log" in module.__dict__
        metrics = self._metrics

        def log(name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
            series = wanted.get(name)
            if series is not None and trainer.training and not trainer.sanity_checking:
                metrics.add(trainer.global_step + 1, trainer.current_epoch, series, value)
            return original(name, value, *args, **kwargs)

        module.__dict__["log"] = log

        def unwrap() -> None:
            if had_own:
                module.__dict__["log"] = original
            else:
                module.__dict__.pop("log", None)

        self._unwrap = unwrap

    def _unrecord_logs(self) -> None:
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None

    def _curves(self, lrs: list[tuple[int, float]]) -> None:
        self._metrics.flush(final=True)  # metrics.csv as logged; the LRs below go only to the curves stage
        if not self._metrics.has("train_loss"):
            self._metrics.rename("returned_loss", "train_loss")
        for step, lr in lrs:
            self._metrics.add(step, None, "lr", lr)
        (result, why), seconds = sessions.timed(lambda: sessions.curves_result(self._metrics.frame()))
        if result is None:
            self.session.skip("curves", why)
            return
        self.session.add("curves", result, seconds, stop=False)

    def _close(self, trainer: Any, module: Any, stopped: str, error: BaseException | None = None) -> None:
        """Fit ended (or failed): the probe, loop and curves stages, the summary, the status logged."""
        self._unrecord_logs()
        session = self.session
        if not session.stages and session.probing is None and session.recorder is None and not self.options.curves:
            return
        session.optimizer_steps = trainer.global_step
        lrs = session.lr_rows()
        session.close_probe()
        session.close_loop(error if isinstance(error, Exception) else None)
        if self.options.curves:
            session.guarded("curves", lambda: self._curves(lrs))
        self.summary = self.session.finish(stopped)
        if self.session.stages:
            for logger in trainer.loggers:
                logger.log_metrics({"nndiag/status": STATUS_CODE[self.session.status]}, step=trainer.global_step)
        if stopped == "completed":
            self.session.raise_if_reached()

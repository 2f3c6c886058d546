"""nndiag inside the Hugging Face Trainer: the TrainerCallback on real Trainer.train runs of a tiny BERT
built from a config (no download), on CPU. Skipped when transformers (or accelerate, which the
Trainer needs) is not installed."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import models_zoo as zoo  # noqa: E402
from conftest import integrations_example  # noqa: E402

from nndiag.errors import BadInput  # noqa: E402
from nndiag.integrations import DiagnosisFailed  # noqa: E402
from nndiag.integrations.transformers import NNDiagCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


class TokenRows(torch.utils.data.Dataset):
    """Hugging Face style items: {input_ids, attention_mask, labels}; every token's class (id - 1 mod 3) is the
    label, so a tiny BERT learns it within a few epochs."""

    def __init__(self, n: int, seed: int, length: int = 12):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, zoo.CLASSES, (n,), generator=g)
        self.ids = 3 * torch.randint(0, 6, (n, length), generator=g) + self.labels[:, None] + 1  # ids 1..18 < VOCAB

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def train(tmp_path: Path, callbacks: list[Any], model: Any = None, epochs: int = 4, **arguments: Any) -> Any:
    settings = dict(
        output_dir=str(tmp_path / "hf"),
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=3e-3,
        logging_steps=1,
        eval_strategy="epoch",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    settings.update(arguments)
    trainer = transformers.Trainer(
        model=model if model is not None else zoo.tiny_bert(),
        args=transformers.TrainingArguments(**settings),
        train_dataset=TokenRows(192, 0),
        eval_dataset=TokenRows(64, 1),
        compute_metrics=accuracy,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def test_a_tiny_bert_run_is_checked_probed_and_its_curves_read(tmp_path: Path) -> None:
    callback = NNDiagCallback(probe_every=10, plots=False)
    trainer = train(tmp_path, [callback])
    summary = callback.summary
    assert summary["metrics"]["steps"]["check-loss"] == "pass"
    assert summary["metrics"]["check-loss.expected_loss"] == pytest.approx(math.log(3))  # C from the model's logits
    assert summary["metrics"]["check-loss.batches"] == 10 and summary["metrics"]["optimizer_steps"] == trainer.state.global_step == 48
    probe = callback.results["probe"]
    assert probe.tables["probe"]["step"].unique().tolist() == [10, 20, 30, 40]
    logged = callback.results["curves"].tables["metrics"]
    assert logged["train_loss"].notna().sum() == 48 and logged["val_loss"].notna().sum() == 4 and logged["val_acc"].notna().sum() == 4
    assert logged["lr"].notna().sum() == 48 and logged["lr"].iloc[0] == pytest.approx(3e-3)  # every step's LR, from the optimizer
    assert summary["metrics"]["loop.steps"] == 48 and summary["metrics"]["steps"]["loop"] == "pass"  # the watch's loop checks, quiet
    assert summary["metrics"]["curves.final_val_acc"] > 0.9  # it learnt
    assert summary["status"] == "pass", summary["findings"]  # a healthy BERT: no false alarm from any stage
    folder = callback.folder
    assert folder.parent == tmp_path / "runs" / "BertForSequenceClassification" and folder.name.startswith("hf-")
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk == summary and on_disk["command"] == "hf"
    assert [p.name for p in sorted(folder.iterdir()) if p.is_dir()] == ["01-check-loss", "02-probe", "03-loop", "04-curves"]
    assert all(not m._forward_hooks for m in trainer.model.modules())


def test_fail_on_stops_the_trainer_before_its_first_step(tmp_path: Path) -> None:
    model = zoo.tiny_bert()
    with torch.no_grad():
        model.classifier.weight.mul_(300.0)  # the last layer far too large
    callback = NNDiagCallback(fail_on="fail", plots=False)
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"),
            report_to=[],
            use_cpu=True,
            per_device_train_batch_size=16,
            num_train_epochs=1,
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=TokenRows(64, 0),
        callbacks=[callback],
    )
    with pytest.raises(DiagnosisFailed) as caught:
        trainer.train()
    assert trainer.state.global_step == 0
    assert caught.value.stage == "check-loss" and [f.code for f in caught.value.findings] == ["initial-loss-high"]
    summary = json.loads((caught.value.folder / "summary.json").read_text())
    assert summary["status"] == "fail" and summary["metrics"]["stopped"] == "fail_on:check-loss"
    assert (caught.value.folder / "report.md").exists() and summary["root_causes"][0]["cause"] == "output-too-large"
    assert not model._forward_pre_hooks and not model._forward_hooks  # the hooks came off the user's model


def test_the_callback_does_not_change_the_training(tmp_path: Path) -> None:
    """Same seed with and without the callback (check-loss and curves on, probing off): BERT's dropout and
    the Trainer's seeded sampler see the same random numbers, so every logged loss is the same."""

    def losses(callbacks: list[Any], folder: str) -> list[float]:
        trainer = train(tmp_path / folder, callbacks, epochs=2)
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    plain = losses([], "plain")
    watched = losses([NNDiagCallback(plots=False)], "watched")
    assert len(plain) == 24 and plain == watched


def test_curves_say_what_was_not_logged(tmp_path: Path) -> None:
    callback = NNDiagCallback(check_loss=False, loop=False, val_loss="eval/loss", val_acc=None, train_loss="training_loss", plots=False)
    train(tmp_path, [callback], epochs=1, eval_strategy="no")
    stage = callback.summary["steps"][0]
    assert stage["name"] == "curves" and stage["state"] == "skipped"
    assert "no training or validation loss was logged" in stage["note"] and "loss" in stage["note"]  # the keys it saw


def test_bad_options_name_the_argument() -> None:
    with pytest.raises(BadInput, match="batches"):
        NNDiagCallback(batches=0)
    with pytest.raises(BadInput, match="fail_on"):
        NNDiagCallback(fail_on="error")


def test_without_transformers_the_import_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "nndiag.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install 'nndiag\[hf\]'"):
        importlib.import_module("nndiag.integrations.transformers")


def test_the_documented_example_runs_and_writes_its_run_folder(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "hf_callback.py"
    spec = importlib.util.spec_from_file_location("example_hf_callback", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["steps"] == {"check-loss": "pass", "probe": "pass", "loop": "pass", "curves": "pass"}
    for stage in ("01-check-loss", "02-probe", "03-loop", "04-curves"):
        assert (tmp_path / "run" / stage / "summary.json").exists()
    assert (tmp_path / "run" / "04-curves" / "metrics.csv").exists()


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # output_dir="hf-out"
    scope: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(integrations_example("## Hugging Face Trainer"), "docs/integrations.md", "exec"), scope)
    callback = scope["callback"]
    assert callback.summary["status"] == "pass", callback.summary["findings"]
    assert callback.folder.parent == tmp_path / "runs" / "BertForSequenceClassification"

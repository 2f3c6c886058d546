"""curves on logs a bad day leaves behind: CSV rows with extra cells, trailing commas, TensorBoard files with corrupted
bytes or cut short, logs of one or two points, an unfinished run's folder, and a log of millions of rows."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from curvegen import make

from nndiag.diagnostics import curve_logs, curves
from nndiag.diagnostics.curves import Curves, decide


def healthy_rows(n: int = 60) -> list[str]:
    rows = ["step,train_loss,val_loss"]
    for i in range(n):
        val = f"{2.3 * math.exp(-i / 10) + 0.2:.4f}" if i % 10 == 9 else ""
        rows.append(f"{i},{2.3 * math.exp(-i / 10) + 0.05:.4f},{val}")
    return rows


def write(tmp_path: Path, name: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def curves_json(cli, path, *args):
    result = cli("curves", path, "--json", "--no-plots", "--out", Path(path).parent / f"out-{Path(path).stem}", *args)
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


# -- CSV -----------------------------------------------------------------------------------------


def test_a_first_row_with_extra_cells_is_refused_not_read_as_one_point(cli, tmp_path):
    """pandas takes the first column as the index when the first data row has one cell more than the header: every name
    shifts, the log read as one point, and the verdict passed."""
    rows = healthy_rows()
    rows[1] += ",7"
    result, _ = curves_json(cli, write(tmp_path, "extra.csv", rows))
    assert result.exit_code == 2 and "data row 1 has 4 cells but the header names 3 columns" in result.stderr
    ok, verdict = curves_json(cli, write(tmp_path, "ok.csv", healthy_rows()))
    assert ok.exit_code == 0 and verdict["metrics"]["points"] == 60


def test_a_trailing_comma_on_every_row_reads_like_the_clean_file(cli, tmp_path):
    clean = curve_logs.read_csv(write(tmp_path, "clean.csv", healthy_rows()))
    rows = healthy_rows()
    trailing = curve_logs.read_csv(write(tmp_path, "trailing.csv", [rows[0]] + [r + "," for r in rows[1:]]))
    both = curve_logs.read_csv(write(tmp_path, "both.csv", [r + "," for r in rows]))  # the header too: an empty column
    for got in (trailing, both):
        pd.testing.assert_series_equal(got.dense, clean.dense)
        pd.testing.assert_series_equal(got.fit["val_loss"], clean.fit["val_loss"])
    assert decide(trailing).codes == decide(clean).codes


def test_a_header_short_of_a_name_is_refused_and_a_later_rows_extra_cell_is_ignored(cli, tmp_path):
    """Every row one cell longer than the header: a column has no name, so which is the loss cannot be known. A later
    row with one more cell (the header and the first row agree): its named cells are read, the extra one ignored."""
    unnamed = ["step,train_loss"] + [f"{i},{2.3 * math.exp(-i / 10):.4f},{0.5 + i / 100:.3f}" for i in range(60)]
    result, _ = curves_json(cli, write(tmp_path, "unnamed.csv", unnamed))
    assert result.exit_code == 2 and "header names 2 columns" in result.stderr
    rows = healthy_rows()
    rows[5] += ",9"
    read = curve_logs.read_csv(write(tmp_path, "later.csv", rows))
    clean = curve_logs.read_csv(write(tmp_path, "clean.csv", healthy_rows()))
    pd.testing.assert_series_equal(read.dense, clean.dense)


def test_blank_cells_are_not_logged_but_a_logged_nan_is_a_divergence(tmp_path):
    rows = healthy_rows(30)
    read = curve_logs.read_csv(write(tmp_path, "blank.csv", rows))
    assert len(read.fit["val_loss"]) == 3 and read.fit["val_loss"].notna().all()
    rows[20] = "19,nan,"
    nan = curve_logs.read_csv(write(tmp_path, "nan.csv", rows))
    assert decide(nan).codes == ["diverged"]
    rows[20] = "19,oops,"
    with pytest.raises(curve_logs.BadInput, match="non-number 'oops' on data row 20"):
        curve_logs.read_csv(write(tmp_path, "text.csv", rows))


# -- too little data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [1, 2])
def test_a_log_of_one_or_two_points_is_too_little_data_not_a_pass(points, cli, tmp_path):
    rows = ["step,loss"] + [f"{i},{2.3 - 0.1 * i}" for i in range(points)]
    result, verdict = curves_json(cli, write(tmp_path, f"p{points}.csv", rows))
    assert result.exit_code == 1 and verdict["status"] == "fail"
    assert [f["code"] for f in verdict["findings"]] == ["too-little-data"]
    assert verdict["findings"][0]["evidence"]["train_points"] == points


def test_three_points_are_judged_and_two_that_blew_up_are_a_divergence(tmp_path):
    three = Curves(dense=pd.Series([2.3, 1.5, 1.0], index=[0.0, 1.0, 2.0]))
    assert decide(three).codes == []
    blown = Curves(dense=pd.Series([2.3, 9.0], index=[0.0, 1.0]))
    assert decide(blown).codes == ["diverged"]
    val_only = Curves(fit={"val_loss": pd.Series([2.0], index=[1.0])}, fit_x="epoch")
    assert decide(val_only).codes == ["too-little-data"]


def test_a_train_smoke_run_of_two_steps_warns_instead_of_failing(cli, write_recipe, tmp_path):
    from conftest import SPIRAL_MLP

    result = cli("train", write_recipe(SPIRAL_MLP), "--max-steps", "2", "--json", "--no-plots", "--out", tmp_path / "t")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0 and {f["code"]: f["severity"] for f in verdict["findings"]} == {"too-little-data": "warn"}


# -- TensorBoard event files -----------------------------------------------------------------------------


@pytest.fixture
def events(tmp_path) -> Path:
    """A TensorBoard run of 34 scalar points (35 records: the file-version record first)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb" / "run"))
    for i in range(34):
        writer.add_scalar("train/loss", 2.3 * math.exp(-i / 8) + 0.1, i)
    writer.close()
    return next((tmp_path / "tb" / "run").glob("events.out.tfevents.*"))


def damaged(events: Path, name: str, data: bytes) -> Path:
    folder = events.parent.parent / name
    folder.mkdir()
    (folder / events.name).write_bytes(data)
    return folder


def test_crc32c_is_the_castagnoli_checksum():
    assert curve_logs.crc32c(b"123456789") == 0xE3069283  # the standard check value
    samples = [b"", b"a", b"123456789", bytes(range(256)) * 3]
    assert curve_logs._crc32c_many(samples) == [curve_logs.crc32c(s) for s in samples]


def test_an_intact_event_file_reads_every_point_and_says_nothing_of_damage(cli, events):
    read = curve_logs.read_events(events.parent)
    assert len(read.dense) == 34 and read.damage == {"records": 35, "unreadable": 0, "truncated": False, "at": []}
    assert "log-damaged" not in decide(read).codes


def test_twenty_corrupted_bytes_lose_one_record_not_the_rest(cli, events):
    data = bytearray(events.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20] = b"\xff" * 20
    folder = damaged(events, "corrupt", bytes(data))
    read = curve_logs.read_events(folder)
    assert len(read.dense) == 33 and read.damage["unreadable"] == 1  # TensorBoard's own reader kept 1 of the 34 points
    result, verdict = curves_json(cli, folder)
    assert result.exit_code == 0 and verdict["status"] == "warn"
    finding = next(f for f in verdict["findings"] if f["code"] == "log-damaged")
    assert "1 of the 35 records" in finding["message"] and "byte" in finding["message"] and "corrupted" in finding["message"]


def test_a_file_cut_short_says_so(cli, events):
    data = events.read_bytes()
    folder = damaged(events, "cut", data[: len(data) // 2 + 7])
    read = curve_logs.read_events(folder)
    assert read.damage["truncated"] and read.damage["unreadable"] == 1 and 10 < len(read.dense) < 34
    finding = next(f for f in decide(read).findings if f.code == "log-damaged")
    assert "ends in the middle of a record" in finding.message


def test_a_log_that_lost_most_of_itself_gets_no_verdict(cli, events):
    data = bytearray(events.read_bytes())
    for k in range(100, len(data), 40):
        data[k] ^= 0x55
    result, _ = curves_json(cli, damaged(events, "ruined", bytes(data)))
    assert result.exit_code == 2 and "unreadable" in result.stderr and "no verdict" in result.stderr
    result, _ = curves_json(cli, damaged(events, "noise", os.urandom(600)))
    assert result.exit_code == 2 and "Traceback" not in result.output


# -- an unfinished run's folder ---------------------------------------------------------------------------


def run_folder(tmp_path: Path, status: str, owner: dict) -> Path:
    folder = tmp_path / f"train-{status}-{owner.get('pid')}"
    folder.mkdir()
    write(folder, "train_steps.csv", ["step,epoch,lr,loss"] + [f"{i},1,0.01,{2.3 * math.exp(-i / 30) + 0.1:.4f}" for i in range(1, 120)])
    (folder / "summary.json").write_text(json.dumps({"command": "train", "status": status, "findings": [], "run": owner}))
    return folder


def test_an_unfinished_runs_verdict_says_so(cli, tmp_path):
    from nndiag import processes

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = [
        ("running", processes.record(), "info", "still in progress"),
        ("running", {**processes.record(), "pid": dead.pid}, "warn", "ended without finishing"),
        ("interrupted", processes.record(), "warn", "interrupted"),
    ]
    for status, owner, severity, phrase in cases:
        result, verdict = curves_json(cli, run_folder(tmp_path, status, owner))
        assert result.exit_code == 0, result.output
        finding = next(f for f in verdict["findings"] if f["code"] == "run-incomplete")
        assert finding["severity"] == severity and phrase in finding["message"] and "119 points" in finding["message"]
    finished = run_folder(tmp_path, "pass", processes.record())
    assert "run-incomplete" not in [f["code"] for f in curves_json(cli, finished)[1]["findings"]]


# -- long logs ------------------------------------------------------------------------------------------------


def long_curves(kind: str, n: int, seed: int = 0) -> Curves:
    """A step-level curve of `n` points of the given kind (tests/curvegen.py), as a log of that length."""
    return make(kind, n, seed)


@pytest.mark.parametrize("kind,code", [("healthy", None), ("noisy", "noisy"), ("lr-too-high", "lr-too-high"), ("plateau", "plateau")])
def test_a_long_log_is_judged_on_every_kth_point_with_the_verdict_of_the_whole(kind, code):
    n = 10 * curves.MAX_JUDGED
    whole = long_curves(kind, n)
    assert (code in decide(whole).codes) if code else decide(whole).codes == []
    assert curves.Shape.of(whole.dense).n == curves.MAX_JUDGED + 1


def test_isolated_spikes_and_a_nan_in_a_long_log_are_not_thinned_away():
    n = 10 * curves.MAX_JUDGED
    base = long_curves("healthy", n)
    spiky = base.dense.copy()
    spiky.iloc[[1001, 50_003]] = 50.0  # between the points the shape rules read
    assert decide(Curves(dense=spiky)).codes == ["diverged"]
    nan = base.dense.copy()
    nan.iloc[123_457] = np.nan
    assert decide(Curves(dense=nan)).codes == ["diverged"]


def test_a_long_csv_is_read_whole_and_its_table_stays_bounded(cli, tmp_path):
    n = 300_000
    step = np.arange(n)
    loss = 2.3 * np.exp(-step / (n / 8)) + 0.1
    frame = pd.DataFrame(
        {"step": step, "epoch": step // 10_000, "train_loss": loss, "val_loss": np.where(step % 10_000 == 9_999, loss + 0.05, np.nan)}
    )
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False, float_format="%.6g")
    result, verdict = curves_json(cli, path)
    assert result.exit_code == 0 and verdict["metrics"]["points"] == n
    assert verdict["metrics"]["points_judged"] == curves.MAX_JUDGED + 1
    table = pd.read_csv(verdict["outputs"]["csv"]["curves"])
    assert len(table[table["series"] == "train_loss_dense"]) == curves.MAX_JUDGED + 1
    assert len(table[table["series"] == "val_loss"]) == n // 10_000

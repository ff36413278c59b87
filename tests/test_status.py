"""`pirl-ablate status`: progress per run computed by hand from hand-written run folders (epoch / total, last loss,
last kNN, warnings, elapsed, time left), one line per distinct error however many runs share it, and `--watch`
following a real live job until it ends."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from pirl_ablate.cli import main
from pirl_ablate.runs import RunDir, atomic_write_json
from pirl_ablate.sweep.display import duration, run_progress, status_view, sweep_time_left
from pirl_ablate.sweep.state import write_job_record

T0 = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def _started(path: Path, epochs: int, rows: list[dict]) -> RunDir:
    run = RunDir(path)
    run.start(f"train.epochs = {epochs}\nPIRL.lambda_ = 0.5\n", seed=0)
    run.update_meta(start=T0.isoformat())
    for row in rows:
        run.log_metrics(row)
    return run


def _record(folder: Path, run_ids: list[str], evaluate: tuple[str, ...] = ()) -> dict:
    record = {"name": "demo", "executor": "local", "axes": [], "evaluate": list(evaluate),
              "runs": [{"run_id": r, "variant": None, "bindings": {}, "seed": 0} for r in run_ids]}
    atomic_write_json(folder / "sweep.json", record)
    return record


def _text(renderable, width: int = 250) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_progress_of_a_running_run_by_hand(tmp_path):
    rows = [{"epoch": 1, "step": 10, "loss": 7.5, "epoch_s": 10.0, "knn_top1": 0.412},
            {"epoch": 2, "step": 20, "loss": 7.25, "epoch_s": 20.0, "warnings": ["loss above ln(N+1)"]}]
    _started(tmp_path / "r", epochs=5, rows=rows)
    p = run_progress(tmp_path / "r", "running", now=T0 + dt.timedelta(seconds=45))
    assert (p.epoch, p.total, p.loss, p.knn) == (2, 5, 7.25, 0.412)  # kNN: the last row that has one
    assert p.warnings == ["loss above ln(N+1)"]
    assert p.elapsed_s == 45.0 and p.eta_s == (10.0 + 20.0) / 2 * (5 - 2)
    assert (duration(45), duration(125), duration(3725)) == ("45s", "2m 05s", "1h 02m")

    run = RunDir(tmp_path / "r")
    run.finish(epochs=5, warnings=["kNN at chance"])
    done = run_progress(tmp_path / "r", "done")
    assert done.eta_s is None and done.warnings == ["kNN at chance"]  # result.json's warnings win once it ended


def test_sweep_time_left_by_hand():
    # finished runs took 60 s and 120 s: every run takes 90 s. Running: 30 s and 100 s in (60 s and 0 s left);
    # 3 slots [0, 0, 60]; the 4 queued runs fill the earliest slot each: [0, 60, 90], [60, 90, 90],
    # [90, 90, 150], [90, 150, 180] -> the last run ends in 180 s.
    assert sweep_time_left([60.0, 120.0], [30.0, 100.0], queued=4, parallelism=3) == pytest.approx(180.0)
    assert sweep_time_left([10.0], [], queued=3, parallelism=1) == pytest.approx(30.0)  # one after the other
    assert sweep_time_left([10.0], [4.0], queued=0, parallelism=2) == pytest.approx(6.0)
    assert sweep_time_left([], [5.0], queued=2, parallelism=2) is None  # nothing finished: no estimate


def test_status_at_80_columns_stacks_whole_numbers_instead_of_cutting_them(tmp_path):
    sweep = tmp_path / "runs" / "lambda"
    rows = [{"epoch": 2, "loss": 7.125, "epoch_s": 30.0, "knn_top1": 0.7012, "pos_sim_transformed": 0.6,
             "neg_sim_transformed": 0.45, "pos_sim_image": 0.5, "neg_sim_image": 0.3, "rel_invariance": 0.95,
             "uniformity": -1.23}]
    run_ids = [f"lambda-PIRL.lambda_={lam}-seed{seed}" for lam, seed in ((0.25, 0), (0.75, 1))]
    for run_id in run_ids:
        _started(sweep / run_id, 3, rows)
    record = _record(sweep, run_ids)
    for run, lam in zip(record["runs"], (0.25, 0.75)):
        run.update(variant="pirl jigsaw", bindings={"PIRL.lambda_": lam})
    record["axes"] = ["PIRL.lambda_"]
    now = T0 + dt.timedelta(minutes=2)
    narrow, wide = _text(status_view(record, sweep, now=now), width=80), _text(status_view(record, sweep, now=now))
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    # every value the wide table shows is whole in the narrow view: 7.125 (loss), 70.1% (kNN), margins
    # 0.6 - 0.45 and 0.5 - 0.3, 1 epoch of 30 s left of 3, lambda and variant
    for value in (*run_ids, "pirl jigsaw", "0.25", "0.75", "2/3", "7.125", "70.1%", "+0.15 +0.20", "0.95", "-1.23",
                  "2m 00s", "~30s"):
        assert value in narrow and value in wide, value


def test_status_shows_progress_and_each_error_once(tmp_path):
    sweep = tmp_path / "runs" / "demo"
    _started(sweep / "ok", 5, [{"epoch": 3, "step": 30, "loss": 6.125, "epoch_s": 4.0, "knn_top1": 0.5}])
    reason = "DataError: Fashion-MNIST IDX files not found (looked in /x, /y) and the download failed"
    for i in range(6):
        _started(sweep / f"bad{i}", 5, []).fail(reason)
    record = _record(sweep, ["ok", *(f"bad{i}" for i in range(6))])
    text = _text(status_view(record, sweep))
    assert text.count("Fashion-MNIST IDX files not found") == 1
    assert f"[1] {reason}  (6 runs: bad0, bad1, bad2, bad3, bad4, bad5)" in text
    assert sum("error [1]" in line for line in text.splitlines()) == 6
    ok = next(line for line in text.splitlines() if "│ ok" in line)
    assert "3/5" in ok and "6.125" in ok and "50.0%" in ok and "~8s" in ok  # 4 s per epoch, 2 epochs left

    assert main(["status", str(sweep)]) == 0


def test_watch_follows_a_live_job_until_it_ends(tmp_path, capsys):
    sweep = tmp_path / "runs" / "demo"
    run = _started(sweep / "live", 2, [{"epoch": 1, "step": 5, "loss": 3.0, "epoch_s": 1.0}])
    _record(sweep, ["live"])
    # A real process whose command line says submitit, as the local executor's controller's does.
    job = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "submitit"],
                           stdin=subprocess.PIPE)
    write_job_record(sweep / "live", "local", str(job.pid), tmp_path / ".submitit")

    def finish_then_end_job():
        run.log_metrics({"epoch": 2, "step": 10, "loss": 2.5, "epoch_s": 1.0})
        run.finish(epochs=2)
        job.communicate(b"")  # the job exits after its run is done

    threading.Timer(0.5, finish_then_end_job).start()
    try:
        assert main(["status", str(sweep), "--watch", "--interval", "0.1"]) == 0
    finally:
        job.kill()
        job.wait()
    printed = capsys.readouterr().out
    assert "1 done" in printed and "2/2" in printed and "2.500" in printed


def test_watch_interval_must_be_positive(tmp_path, capsys):
    _record(tmp_path, [])
    assert main(["status", str(tmp_path), "--watch", "--interval", "0"]) == 2
    assert "--interval 0.0" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")

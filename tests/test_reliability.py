"""Reliability, through the real CLI: every bad input is one line and exit 2 with nothing half-written;
nothing executes from a results folder; sweeps and runs are locked; liveness does not depend on timing.

Expectations are written by hand: the line each bad input must print (the file/key/value it names), the files that
must (not) exist afterwards, and the marker file a planted pickle payload would create if anything unpickled it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_output import one_line_error as _one_line_error
from sweep_jobs import PATIENCE_S, cli_command, worker_env, write_sweep
from tiny_pirl import SIZE, TINY, tiny_config, train_tiny

from pirl_ablate import checkpoint
from pirl_ablate.cli import main
from pirl_ablate.data import build_dataset, make_loader
from pirl_ablate.errors import DataError, UserError
from pirl_ablate.report.results import load_results, runs_of
from pirl_ablate.runs import DiskFull, RunDir, atomic_write_json, read_json
from pirl_ablate.sweep import load_sweep
from pirl_ablate.sweep.state import local_job_alive, process_start, run_state, write_job_record


# --------------------------------------------------------------------------------------------------- helpers
def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


class _Payload:
    """A pickle that creates `marker` when unpickled (what a hostile file in a results folder would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload(marker)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of one tiny PIRL run, 1 epoch; tests copy the folder before changing it."""
    return train_tiny(tmp_path_factory.mktemp("trained"))


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# ------------------------------------------------------------------------------ 5: one line for each bad input
BAD_BINDINGS = [
    ("PIRL.lambda_ = 'abc'", "PIRL.lambda_ = 'abc'"),
    ("train.epochs = 'two'", "train.epochs = 'two': must be a whole number >= 0"),
    ("train.epochs = -1", "train.epochs = -1: must be a whole number >= 0"),
    ("train.batch_size = 0", "train.batch_size = 0: must be a whole number >= 1"),
    ("train.batch_size = 16.5", "train.batch_size = 16.5: must be a whole number >= 1"),
    (f"train.batch_size = {SIZE + 16}", f"train.batch_size = {SIZE + 16} is larger than the {SIZE} training images"),
    ("PIRL.lambda_ = [0.5", "--bind 'PIRL.lambda_ = [0.5': unclosed bracket or quote"),
]


@pytest.mark.parametrize("binding, expected", BAD_BINDINGS, ids=[b for b, _ in BAD_BINDINGS])
def test_bad_binding_is_one_line_exit_2_and_no_checkpoint(tmp_path, capsys, binding, expected):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(config), "--bind", binding, "--out", str(out)]) == 2
    assert expected in _one_line_error(capsys)
    assert not (out / "checkpoints" / "last.pt").exists()  # no run was trained under the bad value
    assert (out / "result.json").exists() == (out / "meta.json").exists()  # started: its failure is recorded
    assert not _temporaries(tmp_path)


def test_wrong_typed_value_in_a_sweep_variant_or_bind_is_one_line_before_any_job(tmp_path, capsys):
    """The sweep driver checks each variant's lines and --bind against the parameter's default type, so the mistake
    is one line and exit 2 with no sweep folder, not a failure reason in every job."""
    sweep = tmp_path / "typo.gin"
    text = TINY + "sweep.name = 'typo'\nsweep.variants = {'ok': ['PIRL.lambda_ = 0.5'],\n" \
                  "                  'bad': [\"PIRL.lambda_ = 'abc'\"]}\n"
    sweep.write_text(text)
    line = text.splitlines().index("                  'bad': [\"PIRL.lambda_ = 'abc'\"]}") + 1
    out = tmp_path / "runs"
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 2
    assert _one_line_error(capsys) == \
        f"error: {sweep}:{line}: PIRL.lambda_ = 'abc' is str, expected float (like 0.5)"
    sweep.write_text(TINY + "sweep.name = 'typo'\nsweep.grid = {'PIRL.lambda_': [0.5]}\n")
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--bind", "train.epochs = 'two'",
                 "--out", str(out)]) == 2
    assert _one_line_error(capsys) == "error: --bind: train.epochs = 'two' is str, expected int (like 800)"
    assert not out.exists()


def test_out_that_is_a_file_and_export_into_a_folder_are_one_line(tmp_path, capsys, trained):
    config, run = trained
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["--quiet", "train", str(config), "--out", str(a_file)]) == 2
    assert f"--out {a_file}: is a file" in _one_line_error(capsys)
    sweep = write_sweep(tmp_path, "sweep.name = 'f'\n")
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(a_file)]) == 2
    assert f"--out {a_file}: is a file" in _one_line_error(capsys)
    assert main(["--quiet", "export", str(run), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder" in _one_line_error(capsys)
    assert a_file.read_text() == "x" and not _temporaries(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), so that a write runs out of space for real; skipped if we cannot mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_names_the_file_and_leaves_nothing_half_written(tiny_disk, capsys, trained):
    _, run = trained
    target = tiny_disk / "backbone.pth"  # a half-width ResNet-18: ~11 MB, on a 1 MiB disk
    assert main(["--quiet", "export", str(run), "--out", str(target)]) == 2
    assert f"disk full writing {target}" in _one_line_error(capsys)
    assert list(tiny_disk.iterdir()) == []  # no partial file, no temporary

    atomic_write_json(tiny_disk / "ok.json", {"a": 1})  # an earlier good file survives a failed overwrite
    with pytest.raises(DiskFull, match=f"disk full writing {tiny_disk / 'ok.json'}"):
        atomic_write_json(tiny_disk / "ok.json", {"a": "x" * 2_000_000})
    assert read_json(tiny_disk / "ok.json") == {"a": 1} and sorted(tiny_disk.iterdir()) == [tiny_disk / "ok.json"]


def test_slurm_without_a_reachable_controller_is_one_line(tmp_path, capsys, monkeypatch):
    if not shutil.which("sbatch"):
        pytest.skip("no sbatch on PATH")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    sweep = write_sweep(tmp_path, "sweep.name = 'noslurm'\n")
    assert main(["--quiet", "sweep", str(sweep), "--executor", "slurm", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err  # sbatch prints its own line to the terminal it inherits; ours is the last
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: --executor slurm: sbatch failed (sbatch: error: Batch job submission failed")
    assert all(line.startswith(("sbatch: ", "error: ")) for line in lines) and "Traceback" not in err


def test_corrupt_image_read_in_a_loader_worker_names_the_file(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "train" / name / "ok.png")
    bad = tmp_path / "train" / "b" / "zz_corrupt.png"
    bad.write_bytes(b"\x89PNG not really")
    dataset = build_dataset("imagefolder", "train", root=str(tmp_path), max_side=8)
    loader = make_loader(dataset, 3, shuffle=False, drop_last=False, num_workers=1, persistent_workers=False)
    loader.set_epoch(0)
    with pytest.raises(DataError) as e:
        list(loader)
    assert str(e.value).startswith(f"{bad}: cannot decode image") and "worker" not in str(e.value)


# ----------------------------------------------------------------------- 1: nothing executes from a results folder
def test_planted_payloads_never_run_under_status_report_eval_resume_export(tmp_path, capsys, trained):
    config, trained_run = trained
    marker = tmp_path / "PAYLOAD_RAN"
    sweep_dir = tmp_path / "runs"
    run = _copy(trained_run, sweep_dir / "r0")
    # a second run whose local job died without a result, with a payload where submitit keeps its result pickle
    atomic_write_json(sweep_dir / "sweep.json", {"name": "runs", "executor": "local", "axes": [], "evaluate": [],
                                                 "runs": [{"run_id": "r0", "seed": 0}, {"run_id": "r1", "seed": 1}]})
    RunDir(sweep_dir / "r1").update_meta(run_id="r1", seed=1)
    atomic_write_json(sweep_dir / "r1" / "job.json", {"executor": "local", "job_id": "999999999",
                                                      "folder": str(sweep_dir / ".submitit" / "%j")})
    _plant(sweep_dir / ".submitit" / "999999999" / "999999999_0_result.pkl", marker)

    assert main(["status", str(sweep_dir)]) == 0  # status: reads JSON only
    assert "local job 999999999 ended without a result" in capsys.readouterr().out
    assert main(["--quiet", "report", str(write_sweep(tmp_path, "sweep.name = 'runs'\n")),
                 "--results", str(tmp_path), "--format", "csv", "--out", str(tmp_path / "reports")]) in (0, 1)
    capsys.readouterr()
    assert main(["--quiet", "eval", str(run), "--protocol", "knn"]) == 0
    capsys.readouterr()
    caches = sorted((run / "features").glob("*.pt"))
    assert caches
    for cache in caches:
        _plant(cache, marker)
    assert main(["--quiet", "eval", str(run), "--protocol", "knn"]) == 0  # the planted caches are re-extracted
    assert f"ignoring feature cache {caches[0]}" in capsys.readouterr().err

    _plant(run / "checkpoints" / "last.pt", marker)
    assert main(["--quiet", "eval", str(run), "--protocol", "knn"]) == 2
    assert f"{run / 'checkpoints' / 'last.pt'}: not a readable pirl-ablate checkpoint" in _one_line_error(capsys)
    assert main(["--quiet", "export", str(run), "--out", str(tmp_path / "net.pth")]) == 2
    assert "not a readable pirl-ablate checkpoint" in _one_line_error(capsys)
    (run / "result.json").unlink()  # unfinished: `train` resumes from the planted last.pt
    assert main(["--quiet", "train", str(config), "--out", str(run)]) == 2
    assert "not a readable pirl-ablate checkpoint" in _one_line_error(capsys)
    assert not marker.exists()
    assert not _temporaries(tmp_path)


def _garbage(seed: int) -> bytes:
    """Seeded random bytes of 1-600 bytes; a third start like a zip (torch's format), a third like a pickle."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 600, (), generator=gen))
    body = bytes(torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).tolist())
    return (b"", b"PK\x03\x04", b"\x80\x02")[seed % 3] + body


def test_any_garbage_as_a_checkpoint_is_a_user_error_naming_the_file(tmp_path):
    """Random bytes make torch's weights_only unpickler raise many kinds of errors (UnpicklingError, IndexError,
    KeyError, ...): every one must come out as the one-line UserError."""
    path = tmp_path / "last.pt"
    for seed in range(300):
        path.write_bytes(_garbage(seed))
        with pytest.raises(UserError, match=f"^{path}: not a readable pirl-ablate checkpoint"):
            checkpoint.load(path)


@pytest.mark.parametrize("content, why", [(_garbage(0), "not a readable"), (b"PK\x03\x04garbage", "not a readable"),
                                          (None, "missing record")])
def test_garbled_or_foreign_checkpoint_is_one_line_naming_it(tmp_path, capsys, trained, content, why):
    _, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    if content is None:  # a real torch file with a key missing
        state = torch.load(last, weights_only=True)
        del state["record"]
        torch.save(state, last)
    else:
        last.write_bytes(content)
    assert main(["--quiet", "export", str(run), "--out", str(tmp_path / "net.pth")]) == 2
    line = _one_line_error(capsys)
    assert str(last) in line and why.replace("missing ", "") in line
    assert not (tmp_path / "net.pth").exists()


# ------------------------------------------------------------------------------------- 2: liveness of local jobs
def test_a_just_started_local_job_is_alive_every_time_and_dead_once_reaped(tmp_path):
    """pid + start time: right after Popen (before or after the child's exec) the job is alive; once it exits it
    is dead, zombie or reaped; a record whose start time is another process's is dead (pid reuse)."""
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        write_job_record(tmp_path, "local", str(child.pid), tmp_path / "%j")
        record = read_json(tmp_path / "job.json")
        assert record["process_start"] == process_start(child.pid)
        assert local_job_alive(str(child.pid), record["process_start"])
        assert not local_job_alive(str(child.pid), record["process_start"] + 1)  # another process with this pid
        child.stdin.close()
        while process_start(child.pid) is not None:  # exited: zombie until reaped, then gone; both are dead
            child.poll()
        assert not local_job_alive(str(child.pid), record["process_start"])
        child.wait()
        assert not local_job_alive(str(child.pid), record["process_start"])


# --------------------------------------------------------------------------------------------------- 3: locks
def _hold_lock(folder: Path, what: str) -> subprocess.Popen:
    """Another process holding `folder`'s lock until its stdin closes (it says "held" once it has it)."""
    code = ("import sys; from pirl_ablate.locks import folder_lock\n"
            f"with folder_lock({str(folder)!r}, {what!r}):\n    print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=worker_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_sweep_on_a_driven_folder_and_second_train_on_a_run_folder_are_refused(tmp_path, capsys, trained):
    config, _ = trained
    sweep = write_sweep(tmp_path, "sweep.name = 'locked'\n")
    out = tmp_path / "runs"
    holder = _hold_lock(out, "sweep")
    try:
        assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 2
        line = _one_line_error(capsys)
        assert f"{out}: this sweep folder is in use by pid {holder.pid} on " in line
        assert not any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir())  # no run was started
    finally:
        holder.stdin.close()
        holder.wait()
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 0  # lock released

    run = tmp_path / "run"
    holder = _hold_lock(run, "run")
    try:
        assert main(["--quiet", "train", str(config), "--out", str(run)]) == 2
        assert f"{run}: this run folder is in use by pid {holder.pid}" in _one_line_error(capsys)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.stdin.close()
        holder.wait()


def test_a_sweep_job_waits_for_a_train_that_holds_its_run_folder(tmp_path):
    sweep = write_sweep(tmp_path, "sweep.name = 'held'\n")
    out = tmp_path / "runs"
    (run,) = [out / r.run_id for r in load_sweep(sweep).runs]
    holder = _hold_lock(run, "run")
    try:
        driver = subprocess.Popen(cli_command("--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)),
                                  cwd=tmp_path, env=worker_env(), stderr=subprocess.PIPE, text=True)
        assert driver.stderr.readline().startswith(f"{run}: this run folder is in use by pid {holder.pid} on ")
        assert sorted(p.name for p in run.iterdir()) == [".lock", "job.json"]  # the job wrote nothing
    finally:
        holder.stdin.close()
        holder.wait()
    assert driver.wait(timeout=PATIENCE_S) == 0, driver.stderr.read()  # then it ran
    assert read_json(run / "result.json")["status"] == "done"


# ------------------------------------------------------------------------------------ 4: silent wrong runs
def test_resume_under_another_config_is_refused_listing_the_keys(tmp_path, capsys, trained):
    config, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    (run / "result.json").unlink()  # as if killed after its checkpoint
    before = (run / "config.gin").read_text()
    assert main(["--quiet", "train", str(config), "--bind", "PIRL.lambda_ = 0.9", "--bind", "train.seed = 4",
                 "--out", str(run)]) == 2
    line = _one_line_error(capsys)
    assert "PIRL.lambda_: 0.5 -> 0.9" in line and "train.seed: 0 -> 4" in line
    assert (run / "config.gin").read_text() == before and not (run / "result.json").exists()


def test_resume_without_a_binding_the_run_was_given_is_refused(tmp_path, capsys, trained):
    """Dropping a binding changes the run as much as changing it: its default would apply."""
    config, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    (run / "result.json").unlink()
    edited = tmp_path / "edited.gin"
    edited.write_text(config.read_text().replace("synthetic.image_size = 16\n", ""))
    assert main(["--quiet", "train", str(edited), "--out", str(run)]) == 2
    assert "synthetic.image_size: 16 -> (unbound)" in _one_line_error(capsys)
    assert not (run / "result.json").exists()


def test_more_epochs_on_a_finished_run_trains_on(tmp_path, trained):
    config, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    assert main(["--quiet", "train", str(config), "--bind", "train.epochs = 2", "--out", str(run)]) == 0
    assert [r["epoch"] for r in RunDir(run).metrics()] == [1, 2]
    assert read_json(run / "result.json")["epochs"] == 2
    assert read_json(run / "result.previous.json")["epochs"] == 1
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_fewer_epochs_than_a_run_has_trained_is_refused(tmp_path, capsys, trained):
    config, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    (run / "result.json").unlink()  # killed after its checkpoint of epoch 1
    assert main(["--quiet", "train", str(config), "--bind", "train.epochs = 0", "--out", str(run)]) == 2
    assert f"train.epochs = 0: {run} has trained 1 epochs already" in _one_line_error(capsys)


def test_orphan_temporaries_are_removed_when_the_run_starts_again(tmp_path, trained):
    config, trained_run = trained
    run = _copy(trained_run, tmp_path / "run")
    orphans = [run / ".result.json.abc123.tmp", run / "checkpoints" / ".last.pt.x9.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    assert main(["--quiet", "train", str(config), "--out", str(run)]) == 0  # already done: nothing trains
    assert not any(p.exists() for p in orphans)


def test_imagefolder_splits_with_other_class_folders_are_refused(tmp_path):
    from PIL import Image

    for split, names in {"train": ("cat", "cow", "dog"), "val": ("cat", "dog")}.items():
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "x.png")
    (tmp_path / "train" / "cow" / "x.png").unlink()  # an empty class folder in train only
    with pytest.raises(DataError, match=r"has other class folders than .*train \(extra: -; missing: cow\)"):
        build_dataset("imagefolder", "test", root=str(tmp_path), max_side=8)
    (tmp_path / "val" / "cow").mkdir()  # the same (empty) folder in both splits: labels agree
    test = build_dataset("imagefolder", "test", root=str(tmp_path), max_side=8)
    assert test.classes == ["cat", "cow", "dog"] and test.labels.tolist() == [0, 2]


# ------------------------------------------------------------------------------------- 6: results folders
GARBLED = [(b'{"status": "do', "JSONDecodeError"), (b'["done"]', "a JSON list, not an object"),
           (b'{"status": "done\xff"}', "UnicodeDecodeError")]


@pytest.mark.parametrize("name", ["result.json", "meta.json"])
@pytest.mark.parametrize("content, why", GARBLED, ids=["truncated", "not-a-dict", "not-utf8"])
def test_garbled_run_files_are_named_by_status_report_and_resumed_by_the_sweep(tmp_path, capsys, name, content, why):
    sweep = write_sweep(tmp_path, "sweep.name = 'g'\nsweep.seeds = [0, 1]\n")
    out = tmp_path / "g"
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 0
    bad_run, good_run = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    (bad_run / name).write_bytes(content)

    assert main(["status", str(out)]) == 0
    state = run_state(bad_run)
    assert state.state == "failed" and state.detail.startswith(f"{bad_run / name}: unreadable") and why in state.detail

    assert main(["--quiet", "report", str(sweep), "--results", str(tmp_path), "--format", "markdown",
                 "--out", str(tmp_path / "reports")]) == 2  # the tiny job has no metric: no results, problems listed
    assert bad_run.name in capsys.readouterr().out
    runs = runs_of(load_results(tmp_path)).set_index("run_id")
    assert len(runs) == 2  # no phantom row
    assert runs.loc[bad_run.name, "status"] == "failed" and runs.loc[good_run.name, "status"] == "done"
    assert runs.loc[bad_run.name, "reason"].startswith(f"{bad_run / name}: unreadable") and why in \
        runs.loc[bad_run.name, "reason"]

    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 0  # re-runs it
    assert read_json(bad_run / "result.json")["status"] == "done"
    assert read_json(bad_run / "meta.json")["run_id"] == bad_run.name


def test_unreadable_eval_file_is_listed_and_a_copied_run_folder_counts_once(tmp_path, capsys):
    sweep = write_sweep(tmp_path, "sweep.name = 'c'\n")
    out = tmp_path / "c"
    assert main(["--quiet", "sweep", str(sweep), "--executor", "debug", "--out", str(out)]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    RunDir(run).write_eval("knn-tiny", {"protocol": "knn", "dataset": "tiny", "metrics": {"res5": {"top1": 0.5}}})
    (run / "evals" / "linear-tiny.json").write_bytes(b"\xff\xfe")
    shutil.copytree(run, tmp_path / "c" / "backup" / run.name)

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sweep.json").write_text('{"name": "other", "runs": [')
    frame = load_results(tmp_path)
    assert len(runs_of(frame)) == 1
    assert frame[frame["protocol"] == "knn"]["value"].tolist() == [0.5]
    reasons = [why for _, why in frame.attrs["left_out"]]
    assert any("linear-tiny.json: unreadable (UnicodeDecodeError" in r for r in reasons)
    assert any(f"a copy of run {run.name}" in r for r in reasons)
    assert any(r.startswith(f"{tmp_path / 'other' / 'sweep.json'}: unreadable") for r in reasons)


def test_bad_sweep_record_is_one_line(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "x", "runs": "nope"}))
    assert main(["status", str(tmp_path)]) == 2
    assert f"{tmp_path / 'sweep.json'}: unreadable" in _one_line_error(capsys)


def test_a_planted_payload_as_a_cifar_batch_is_refused_without_running(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    folder = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _plant(folder / name, marker)
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 python batch \(UnpicklingError: refusing"):
        build_dataset("cifar10", "train", root=str(tmp_path))
    assert not marker.exists()

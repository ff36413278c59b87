"""What pirl-ablate guarantees (README), through the CLI as a user types it: a sweep never takes a run
trained under another recipe for its own, nothing is written through a symbolic link, generated data is never left
half-written, metrics history describes exactly the training that produced the checkpoint, out-of-range values and
other bad input are one `error:` line naming the key or file.

Expectations are written by hand: the keys and files each message must name, the rows and files that must (not)
exist afterwards, the bytes a link's target must still hold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_output import one_line_error as _one_line_error
from sweep_jobs import PATIENCE_S, cli_command, worker_env, write_sweep
from tiny_pirl import TINY, tiny_config, train_tiny

from pirl_ablate.cli import main
from pirl_ablate.data.voc import VOC_CLASSES, read_voc, write_synthetic_voc
from pirl_ablate.runs import RunDir

SWEEP = TINY + """
train.epochs = 1
train.monitor_every = 0
train.health_images = 0
sweep.name = 'recipe'
sweep.grid = {'PIRL.lambda_': [0.5]}
sweep.executor = 'debug'
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A sweep folder holding the one finished run of SWEEP (tests copy it before changing it)."""
    folder = tmp_path_factory.mktemp("swept")
    (folder / "sweep.gin").write_text(SWEEP)
    assert main(["--quiet", "sweep", str(folder / "sweep.gin"), "--out", str(folder / "out")]) == 0
    return folder / "out"


def _sweep_again(tmp_path: Path, swept: Path, extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    (tmp_path / "sweep.gin").write_text(SWEEP + extra)
    return main(["--quiet", "sweep", str(tmp_path / "sweep.gin"), "--out", str(out)]), out


# ------------------------------------------------------------------------------ 1. the same run is the same recipe
def test_a_sweep_refuses_a_run_folder_trained_under_another_non_swept_binding(tmp_path, swept, capsys):
    capsys.readouterr()
    code, out = _sweep_again(tmp_path, swept, "PIRL.tau = 0.2\n")
    line = _one_line_error(capsys)
    assert code == 2 and "PIRL.tau" in line and "0.2" in line and "--out" in line, line
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert RunDir(run).result()["status"] == "done" and len(RunDir(run).metrics()) == 1  # left as it was


def test_a_sweep_with_another_grid_or_parallelism_keeps_its_done_runs(tmp_path, swept):
    code, out = _sweep_again(tmp_path, swept, "local.parallelism = 1\nsweep.grid = {'PIRL.lambda_': [0.5]}\n"
                                              "sweep.seeds = [0]\n")
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert code == 0 and RunDir(run).meta()["restarts"] == 0  # not trained again


def test_a_sweep_with_more_epochs_trains_its_runs_on(tmp_path, swept):
    code, out = _sweep_again(tmp_path, swept, "train.epochs = 2\n")
    assert code == 0
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert [r["epoch"] for r in RunDir(run).metrics()] == [1, 2] and RunDir(run).result()["epochs"] == 2


# ------------------------------------------------------------------------------------- 3. nothing through a link
QUIET = "train.monitor_every = 0\ntrain.health_images = 0\n"  # no kNN monitor, no health batch: faster


def _config(folder: Path, extra: str = "") -> Path:
    return tiny_config(folder, QUIET + extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of one tiny PIRL run of 1 epoch; tests copy the folder before changing it."""
    return train_tiny(tmp_path_factory.mktemp("trained"), QUIET)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside.txt"
    victim.write_text("not pirl-ablate's\n")
    return victim


def test_a_lock_link_in_a_run_folder_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = _victim(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(victim)
    code = main(["--quiet", "train", str(_config(tmp_path)), "--out", str(tmp_path / "run")])
    line = _one_line_error(capsys)
    assert code == 2 and ".lock: is a symbolic link" in line, line
    assert victim.read_text() == "not pirl-ablate's\n"


@pytest.mark.parametrize("restart", [False, True])
def test_a_metrics_link_is_replaced_by_the_runs_own_file_never_appended_to(tmp_path, trained, restart):
    config, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    (run / "result.json").unlink()  # killed: resumed from its checkpoint, or started over without one
    if not restart:
        shutil.rmtree(run / "checkpoints")
    rows = (run / "metrics.jsonl").read_text()
    victim = _victim(tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    assert main(["--quiet", "train", str(config), "--out", str(run)]) == 0
    assert victim.read_text() == "not pirl-ablate's\n"
    assert not (run / "metrics.jsonl").is_symlink() and [r["epoch"] for r in RunDir(run).metrics()] == [1]
    if restart:
        assert (run / "metrics.jsonl").read_text() == rows


def test_a_hard_linked_lock_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = _victim(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").hardlink_to(victim)
    code = main(["--quiet", "train", str(_config(tmp_path)), "--out", str(tmp_path / "run")])
    assert code == 2 and "a hard link" in _one_line_error(capsys)
    assert victim.read_text() == "not pirl-ablate's\n"


def test_an_evals_link_is_not_written_through(tmp_path, capsys, trained):
    _, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(run / "evals", ignore_errors=True)
    (run / "evals").symlink_to(outside, target_is_directory=True)
    code = main(["--quiet", "eval", str(run), "--protocol", "knn"])
    assert code == 2 and "evals: is a symbolic link" in _one_line_error(capsys)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("folder, command", [
    ("checkpoints", "train"), ("tensorboard", "train"), ("features", "linear"),
])
def test_a_run_subfolder_link_is_refused_and_nothing_written_through_it(tmp_path, capsys, trained, folder, command):
    config, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(run / folder, ignore_errors=True)
    (run / folder).symlink_to(outside, target_is_directory=True)
    if command == "train":
        (run / "result.json").unlink()  # unfinished: training resumes and writes into the run folder
        if folder != "checkpoints":
            shutil.rmtree(run / "checkpoints")  # from the start, so that it trains and logs again
        argv = ["--quiet", "train", str(config), "--out", str(run)]
    else:
        argv = ["--quiet", "eval", str(run), "--protocol", command]
    code = main(argv)
    assert code == 2 and f"{folder}: is a symbolic link" in _one_line_error(capsys)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------ 4. history is the checkpoint's training
def test_a_run_restarted_without_its_checkpoint_keeps_no_row_of_the_old_attempt(tmp_path, trained):
    config, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    (run / "result.json").unlink()  # a run killed mid-training whose checkpoint was lost
    (run / "checkpoints" / "last.pt").unlink()
    assert main(["--quiet", "train", str(config), "--out", str(run)]) == 0
    assert [r["epoch"] for r in RunDir(run).metrics()] == [1]


def test_an_epoch_row_torn_after_its_checkpoint_is_written_again_on_resume(tmp_path, trained):
    config, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    row = RunDir(run).metrics()[0]
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: len(text) // 2])  # the line of epoch 1, torn
    assert main(["--quiet", "train", str(config), "--out", str(run), "--bind", "train.epochs = 2"]) == 0
    rows = RunDir(run).metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == row


# ------------------------------------------------------------------------------- 2. generated data, whole or not
def test_a_synthetic_vocdevkit_killed_while_written_is_absent_not_half_written(tmp_path):
    root = tmp_path / "voc"
    writer = subprocess.Popen([sys.executable, "-c", "import sys; from pirl_ablate.data.voc import write_synthetic_voc;"
                               " write_synthetic_voc(sys.argv[1], num_trainval=4000, image_size=16)", str(root)])
    deadline = time.monotonic() + PATIENCE_S
    while not any(root.rglob("*.jpg")) and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)  # at whatever point of the writing it has reached
    writer.wait()
    if (root / "VOCdevkit").exists():  # only if it had finished: then whole
        assert len(read_voc(root, "2007", "trainval", VOC_CLASSES[:3])) == 4000
        return
    write_synthetic_voc(root, num_trainval=8, num_test=4, image_size=16)  # a later run writes it afresh
    assert len(read_voc(root, "2007", "test", VOC_CLASSES[:3])) == 4


# ------------------------------------------------------------------------- 8. one evaluation per run and protocol
def test_a_second_evaluation_of_one_run_and_protocol_is_refused_naming_the_first(tmp_path, capsys, trained):
    _, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    code = (f"import sys; from pirl_ablate.locks import eval_lock\nwith eval_lock({str(run)!r}, 'knn'):\n"
            "    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["--quiet", "eval", str(run), "--protocol", "knn"]) == 2
        line = _one_line_error(capsys)
        assert f"{run}: its knn evaluation is run by pid {holder.pid} on " in line, line
        assert not (run / "evals" / "knn-synthetic.json").exists()
    finally:
        holder.stdin.close()
        holder.wait()


# ------------------------------------------------------------------------------------ 6. one line, no traceback
@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C to its process group"])
def test_a_stopped_sweep_prints_its_summary_and_no_traceback(tmp_path, how):
    path = write_sweep(tmp_path, "sweep.name = 'stop'\nlocal.parallelism = 2\ntiny_train.hold_at = 1\n"
                                 "sweep.grid = {'tiny_train.lr': [0.1, 0.2]}\n")
    out = tmp_path / "runs"
    sweep = subprocess.Popen(cli_command("--quiet", "sweep", str(path), "--out", str(out)), cwd=tmp_path,
                             env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + PATIENCE_S
    while len(list(out.rglob("last.json"))) < 2:  # both jobs hold after their first step until stopped
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    if how.startswith("SIGTERM"):
        sweep.send_signal(signal.SIGTERM)
    else:  # what a terminal's Ctrl-C does: SIGINT to every process of the foreground group, job controllers too
        os.killpg(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=PATIENCE_S)
    assert sweep.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "stopped 2 local job(s)" in err


def _read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written: its mode 0555 for a user, a read-only bind mount
    in a private mount namespace for root (whom modes do not stop); skips where neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    mount = ['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && '
             'exec "$@"', str(folder)]
    if shutil.which("unshare") is None or subprocess.run([*mount, "true"], capture_output=True).returncode != 0:
        pytest.skip("root without mount namespaces: no way to make a folder read-only")
    return mount


@pytest.mark.slow
def test_a_read_only_results_folder_is_one_line_for_each_writing_command(tmp_path, trained, swept):
    config, run = trained
    folder = tmp_path / "results"
    shutil.copytree(run, folder / "run")
    shutil.copytree(swept, folder / "recipe")
    (tmp_path / "sweep.gin").write_text(SWEEP)
    commands = [["train", str(config), "--out", str(folder / "new")],
                ["eval", str(folder / "run"), "--protocol", "knn"],
                ["sweep", str(tmp_path / "sweep.gin"), "--out", str(folder / "other")],
                ["export", str(folder / "run"), "--out", str(folder / "net.pth")],
                ["report", str(tmp_path / "sweep.gin"), "--results", str(folder), "--out", str(folder / "reports")]]
    script = ("import sys, json; from pirl_ablate.cli import main\n"
              "for args in json.loads(sys.argv[1]):\n"
              "    code = main(['--quiet', *args]); print(f'--- exit {code}', file=sys.stderr, flush=True)\n")
    done = subprocess.run([*_read_only_prefix(folder), sys.executable, "-c", script, json.dumps(commands)],
                          capture_output=True, text=True, env=worker_env(), timeout=PATIENCE_S)
    assert done.stderr.count("--- exit 2\n") == len(commands), done.stderr
    for args, err in zip(commands, done.stderr.split("--- exit 2\n")):
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], (args, err)


def _voc_with_box(root: Path, box: tuple[int, int, int, int]) -> Path:
    """A synthetic devkit whose first trainval annotation gets `box` (xmin, ymin, xmax, ymax) on a 16 px image."""
    write_synthetic_voc(root, num_trainval=4, num_test=2, image_size=16)
    xml = root / "VOCdevkit" / "VOC2007" / "Annotations" / "2007_000000.xml"
    text = xml.read_text()
    start, end = text.index("<bndbox>"), text.index("</bndbox>")
    tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    xml.write_text(text[:start] + f"<bndbox>{tags}" + text[end:])
    return xml


@pytest.mark.parametrize("box", [(10, 2, 4, 8), (2, 2, 17, 8), (0, 2, 4, 8)], ids=["inverted", "right", "left"])
def test_a_bad_voc_box_is_one_line_naming_the_file_when_the_dataset_loads(tmp_path, capsys, trained, box):
    xml = _voc_with_box(tmp_path / "voc", box)
    _, run = trained
    code = main(["--quiet", "eval", str(run), "--protocol", "svm", "--dataset", "voc2007",
                 "--bind", f"voc2007.root = '{tmp_path / 'voc'}'", "--bind", "voc2007.classes = ('aeroplane', "
                 "'bicycle', 'bird')", "--bind", "voc2007.image_size = 16"])
    line = _one_line_error(capsys)
    assert code == 2 and str(xml) in line and "inverted or outside the 16x16 image" in line, line


@pytest.mark.parametrize("text, expected", [
    (b"include 'pirl_jigsaw.gin'\n# caf\xe9\n", ":2: not UTF-8 text"),
    (b"from __gin__ import dynamic_registration\ninclude 'pirl_jigsaw.gin'\n", ":1: `from __gin__ import "
                                                                           "dynamic_registration` is not supported")])
def test_a_gin_file_not_utf8_or_with_dynamic_registration_is_one_line(tmp_path, capsys, text, expected):
    (tmp_path / "bad.gin").write_bytes(text)
    for command in (["train", str(tmp_path / "bad.gin"), "--out", str(tmp_path / "run")],
                    ["sweep", str(tmp_path / "bad.gin"), "--dry-run"]):
        assert main(["--quiet", *command]) == 2
        line = _one_line_error(capsys)
        assert f"{tmp_path / 'bad.gin'}{expected}" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"PIRL.tau = 0.1\n# caf\xe9\n", b"PIRL.tau = (\n", b"garbage {{\n"],
                         ids=["not UTF-8", "unclosed", "not gin"])
def test_an_unreadable_config_gin_of_a_done_run_is_one_line(tmp_path, capsys, trained, content):
    config, run = trained
    run = Path(shutil.copytree(run, tmp_path / "run"))
    (run / "config.gin").write_bytes(content)
    assert main(["--quiet", "train", str(config), "--out", str(run)]) == 2
    line = _one_line_error(capsys)
    assert f"{run / 'config.gin'}: unreadable" in line, line


def test_out_under_a_file_is_one_line(tmp_path, capsys, trained, swept):
    config, run = trained
    (tmp_path / "file").write_text("a file\n")
    shutil.copytree(swept, tmp_path / "results" / "recipe")
    (tmp_path / "sweep.gin").write_text(SWEEP)
    for command in (["train", str(config), "--out", str(tmp_path / "file" / "run")],
                    ["export", str(run), "--out", str(tmp_path / "file" / "net.pth")],
                    ["report", str(tmp_path / "sweep.gin"), "--results", str(tmp_path / "results"), "--out",
                     str(tmp_path / "file" / "r")]):
        assert main(["--quiet", *command]) == 2, command
        line = _one_line_error(capsys)
        assert str(tmp_path / "file") in line and "not a folder" in line, line


@pytest.mark.parametrize("interval", ["nan", "inf", "-1"])
def test_status_watch_with_an_interval_that_is_not_a_positive_number_is_one_line(capsys, swept, interval):
    assert main(["status", str(swept), "--watch", "--interval", interval]) == 2
    assert f"--interval {float(interval)}" in _one_line_error(capsys)


# ------------------------------------------------------------------------- 5. values in range, named by gin key
@pytest.mark.parametrize("binding, expected", [
    ("PIRL.tau = -0.1", "PIRL.tau = -0.1: must be > 0"),
    ("PIRL.tau = 0", "PIRL.tau = 0: must be > 0"),
    ("PIRL.z_momentum = 2.0", "PIRL.z_momentum = 2.0: must be in [0, 1)"),
    ("heads.embed_dim = 0", "heads.embed_dim = 0: must be a whole number >= 1"),
    ("MemoryBank.momentum = 1.0", "MemoryBank.momentum = 1.0: must be in [0, 1)"),
    ("jigsaw.grid = 0", "jigsaw.grid = 0: must be a whole number >= 1"),
    ("knn_eval.sigma = -1.0", "knn_eval.sigma = -1.0: must be > 0"),
    ("train.transform = 'rotation+jigsw'", "unknown transform `jigsw` (did you mean `jigsaw`?)"),
])
def test_an_out_of_range_value_is_one_line_naming_its_key_and_leaves_no_run_folder(tmp_path, capsys, binding,
                                                                                   expected):
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(_config(tmp_path)), "--bind", binding, "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert expected in line, line
    assert not out.exists()  # no failed run is left behind for a config error


def test_a_binding_of_a_method_the_run_does_not_use_is_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "train", str(_config(tmp_path, "train.epochs = 0\n")), "--bind", "NPID.tau = 0.2",
                 "--bind", "JigsawMethod.num_patches = 4", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: NPID.tau, JigsawMethod.num_patches: bound, but train.method = 'pirl' does not read " \
           "them" in err, err


# ------------------------------------------------------------------------------------------------ 7. messages
def test_a_run_without_meta_json_is_reported_as_such_not_as_missing_its_evaluation(tmp_path, capsys, swept):
    results = tmp_path / "results"
    shutil.copytree(swept, results / "recipe")
    (run,) = [p for p in (results / "recipe").iterdir() if p.is_dir() and not p.name.startswith(".")]
    (run / "evals").mkdir()
    (run / "evals" / "knn-synthetic.json").write_text(json.dumps(
        {"protocol": "knn", "dataset": "synthetic", "metrics": {"res5": {"top1": 50.0}}}))
    (run / "meta.json").unlink()
    (tmp_path / "sweep.gin").write_text(SWEEP + "sweep.evaluate = ['knn']\n")
    capsys.readouterr()
    main(["--quiet", "report", str(tmp_path / "sweep.gin"), "--results", str(results), "--format", "csv",
          "--out", str(tmp_path / "reports")])
    captured = capsys.readouterr()
    text = captured.out + captured.err + "".join(p.read_text() for p in (tmp_path / "reports").glob("*"))
    assert not re.search(r"has no \S+ evaluation", text) and "missing (the run's sweep point" in text, text


def test_status_and_report_read_a_sweep_whose_config_gin_is_not_utf8(tmp_path, capsys, swept):
    results = tmp_path / "results"
    shutil.copytree(swept, results / "recipe")
    (run,) = [p for p in (results / "recipe").iterdir() if p.is_dir() and not p.name.startswith(".")]
    (run / "config.gin").write_bytes(b"train.epochs = 1\n# caf\xe9\n")
    (tmp_path / "sweep.gin").write_text(SWEEP)
    assert main(["status", str(results / "recipe")]) == 0
    main(["--quiet", "report", str(tmp_path / "sweep.gin"), "--results", str(results), "--out", str(tmp_path / "r")])
    assert "Traceback" not in capsys.readouterr().err

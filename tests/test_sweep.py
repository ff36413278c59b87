"""Sweeps: expansion, run ids, validation before submission, dry run, debug and local executors, kill + re-run.

The jobs are the tiny stand-in trainer of tests/sweep_jobs.py run by real submitit executors (in-process debug
executor, real local subprocesses); expectations are the values written into the sweep files by hand.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_jobs import PATIENCE_S, cli_command, starts, worker_env, write_sweep

from pirl_ablate import config
from pirl_ablate.cli import main
from pirl_ablate.errors import ConfigError
from pirl_ablate.runs import RunDir, read_json
from pirl_ablate.sweep import load_sweep, run_id
from pirl_ablate.sweep.spec import eval_targets
from pirl_ablate.sweep.state import run_state


def _status(folder: Path) -> str:
    """`pirl-ablate status` output, wide enough that no cell wraps."""
    proc = subprocess.run(cli_command("status", str(folder)), capture_output=True, text=True, timeout=PATIENCE_S,
                          env=worker_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ------------------------------------------------------------------------------------------------- expansion
def test_expansion_is_variants_times_zip_times_grid_times_seeds(tmp_path):
    path = write_sweep(tmp_path, """
sweep.name = 'expand'
sweep.grid = {'tiny_train.lr': [0.1, 0.2]}
sweep.zip = {'tiny_train.steps': [1, 2], 'tiny_train.name': ['one', 'two']}
sweep.variants = {'slow': ['tiny_train.step_s = 0.5'], 'fast': 'tiny_train.step_s = 0.0'}
sweep.seeds = [7, 8]
""")
    sweep = load_sweep(path)
    expected = {(variant, step_s, lr, steps, name, seed)
                for variant, step_s in (("slow", 0.5), ("fast", 0.0))
                for steps, name in ((1, "one"), (2, "two"))
                for lr in (0.1, 0.2)
                for seed in (7, 8)}
    assert sweep.name == "expand" and len(sweep.runs) == 16
    seen = set()
    for run in sweep.runs:
        config.parse_text(run.config)  # what a worker sees
        from sweep_jobs import tiny_train

        p = tiny_train()
        seen.add((run.variant, p["step_s"], p["lr"], p["steps"], p["name"], p["seed"]))
        assert run.bindings == {"tiny_train.steps": p["steps"], "tiny_train.name": p["name"], "tiny_train.lr": p["lr"]}
        assert run.seed == p["seed"]
    assert seen == expected
    assert sweep.axes == ["tiny_train.steps", "tiny_train.name", "tiny_train.lr"]


def test_baselines_run_once_per_seed_beside_the_grid(tmp_path):
    path = write_sweep(tmp_path, """
sweep.grid = {'tiny_train.lr': [0.1, 0.2, 0.3]}
sweep.baselines = {'random init': ['tiny_train.steps = 0']}
sweep.seeds = [0, 1]
""")
    sweep = load_sweep(path)
    assert len(sweep.runs) == 3 * 2 + 1 * 2
    base = [r for r in sweep.runs if r.variant == "random init"]
    assert sorted(r.seed for r in base) == [0, 1] and all(r.bindings == {} for r in base)
    config.parse_text(base[0].config)
    from sweep_jobs import tiny_train

    assert tiny_train()["steps"] == 0
    grid_lrs = sorted(r.bindings["tiny_train.lr"] for r in sweep.runs if r.variant is None)
    assert grid_lrs == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3]


def test_bind_reaches_every_run_but_not_the_bindings_a_baseline_makes_itself(tmp_path):
    # random_init.gin-like: the baseline's file binds steps = 0 (it trains nothing) on top of a shared scale file
    (tmp_path / "common.gin").write_text("tiny_train.steps = 5\n")
    (tmp_path / "untrained.gin").write_text("include 'common.gin'\ntiny_train.steps = 0\n")
    path = write_sweep(tmp_path, """
include 'common.gin'
sweep.grid = {'tiny_train.lr': [0.1, 0.2]}
sweep.baselines = {'random init': ["include 'untrained.gin'"], 'own line': ['tiny_train.name = "own"']}
""")
    from sweep_jobs import tiny_train

    seen = {}
    for run in load_sweep(path, bindings=["tiny_train.steps = 9", "tiny_train.name = 'bound'"]).runs:
        config.parse_text(run.config)
        p = tiny_train()
        seen[run.variant or p["lr"]] = (p["steps"], p["name"])
    assert seen == {0.1: (9, "bound"), 0.2: (9, "bound"), "random init": (0, "bound"), "own line": (9, "own")}


def test_a_variant_including_a_file_the_sweep_file_included_keeps_the_sweep_files_bindings(tmp_path):
    # common.gin plays the scale file: the sweep file includes it and overrides its lr; each variant's base config
    # includes it again (skipped: every file is read once), adds its own binding, and a variant line still wins
    (tmp_path / "common.gin").write_text("tiny_train.lr = 0.1\ntiny_train.steps = 5\n")
    (tmp_path / "base.gin").write_text("include 'common.gin'\ntiny_train.name = 'base'\n")
    path = write_sweep(tmp_path, """
include 'common.gin'
tiny_train.lr = 0.7
sweep.variants = {'base': ["include 'base.gin'"], 'base, own lr': ["include 'base.gin'", 'tiny_train.lr = 0.3'],
                  'plain': []}
""")
    from sweep_jobs import tiny_train

    seen = {}
    for run in load_sweep(path).runs:
        config.parse_text(run.config)
        p = tiny_train()
        seen[run.variant] = (p["lr"], p["steps"], p["name"])
    assert seen == {"base": (0.7, 5, "base"), "base, own lr": (0.3, 5, "base"), "plain": (0.7, 5, "tiny")}


def test_run_ids_are_stable_and_distinguish_seed_variant_and_values(tmp_path):
    assert run_id({"A.x": 1, "B.y": 2}, 0, None) == run_id({"B.y": 2, "A.x": 1}, 0, None)
    ids = {run_id({"A.x": 1}, 0, None), run_id({"A.x": 1}, 1, None), run_id({"A.x": 1}, 0, "v"),
           run_id({"A.x": 2}, 0, None), run_id({"A.y": 1}, 0, None)}
    assert len(ids) == 5
    # the same id in a fresh process (no hash randomisation): a re-run finds the folders of an earlier one
    code = "from pirl_ablate.sweep import run_id; print(run_id({'A.x': 1}, 0, 'v'))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE_S)
    assert fresh.stdout.strip() == run_id({"A.x": 1}, 0, "v")
    a = write_sweep(tmp_path / "a", "sweep.grid = {'tiny_train.lr': [0.1, 0.2], 'tiny_train.steps': [3]}\n")
    b = write_sweep(tmp_path / "b", "tiny_train.step_s = 0.01\n"  # another base config, keys in another order
                                    "sweep.grid = {'tiny_train.steps': [3], 'tiny_train.lr': [0.2, 0.1]}\n")
    assert {r.run_id for r in load_sweep(a).runs} == {r.run_id for r in load_sweep(b).runs}


# ------------------------------------------------------------------------------------------------ validation
BAD = [
    ("sweep.grid = {'tiny_trian.lr': [0.1]}\n", 4, "unknown configurable `tiny_trian`", "tiny_train"),
    ("sweep.grid = {\n    'tiny_train.steps': [1],\n    'tiny_train.lrr': [0.1]}\n", 6,
     "`tiny_train` has no parameter `lrr`", "`lr`"),
    ("sweep.grid = {'tiny_train.lr': [0.1, 'high']}\n", 4, "'high' is str, expected float", "0.1"),
    ("sweep.grid = {'tiny_train.steps': [1, 2.5]}\n", 4, "2.5 is float, expected int", "(like 3)"),
    ("sweep.grid = {}\n", 4, "sweep.grid is empty", ""),
    ("sweep.grid = {'tiny_train.lr': []}\n", 4, "sweep.grid['tiny_train.lr'] is empty", ""),
    ("sweep.zip = {'tiny_train.lr': [0.1, 0.2], 'tiny_train.steps': [1]}\n", 4, "differ in length", ""),
    ("tiny_train.stepz = 3\n", 4, "`tiny_train` has no parameter `stepz`", "`steps`"),
    ("sweep.variants = {'ok': 'tiny_train.lr = 0.1', 'typo': 'tiny_train.nmae = \"x\"'}\n", 4,
     "variant 'typo'", "`name`"),
    ("sweep.variants = {'inc': \"include 'nowhere.gin'\"}\n", 4, "nowhere.gin: no such gin file", ""),
    ("sweep.executor = 'slrum'\n", 4, "'slrum' is not one of", "`slurm`"),
    ("sweep.evaluate = ['svm:voc207']\n", 4, "dataset 'voc207' (for svm) is not a registered", "`voc2007`"),
    ("sweep.evaluate = {'svn': 'voc2007'}\n", 4, "protocol 'svn' is not one of", "`svm`"),
    ("sweep.evaluate = ['svm', 'svm:voc2007']\n", 4, "names 'svm' twice", ""),
]


@pytest.mark.parametrize(("body", "line", "reason", "hint"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_sweep_file_fails_with_file_line_and_reason(tmp_path, body, line, reason, hint):
    path = write_sweep(tmp_path, body)  # HEADER is 3 lines: the body starts on line 4
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    message = str(e.value)
    assert "\n" not in message
    assert f"tiny.gin:{line}:" in message, message
    assert reason in message and hint in message, message


def test_bad_sweep_file_submits_nothing_and_exits_2(tmp_path, capsys):
    path = write_sweep(tmp_path, "sweep.grid = {'tiny_train.lr': [0.1, 'high']}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "runs"), "--executor", "debug"]) == 2
    err = capsys.readouterr().err
    assert "tiny.gin:4" in err and "'high'" in err
    assert not (tmp_path / "runs").exists()


def test_evaluate_names_a_dataset_per_protocol_as_a_dict_or_list_and_the_old_list_still_works(tmp_path):
    as_dict = write_sweep(tmp_path / "d", "sweep.evaluate = {'svm': 'voc2007', 'knn': None}\n")
    as_list = write_sweep(tmp_path / "l", "sweep.evaluate = ['svm:voc2007', 'knn']\n")
    old = write_sweep(tmp_path / "o", "sweep.evaluate = ['linear', 'knn']\n")
    assert eval_targets(load_sweep(as_dict).settings.evaluate) == [("svm", "voc2007"), ("knn", None)]
    assert load_sweep(as_list).settings.evaluate == load_sweep(as_dict).settings.evaluate
    assert eval_targets(load_sweep(old).settings.evaluate) == [("linear", None), ("knn", None)]


def test_a_run_is_done_only_when_each_protocol_has_its_result_on_its_own_dataset(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start("", seed=0)
    run.finish(epochs=1)
    run.write_eval("svm-fashion_mnist", {"protocol": "svm", "dataset": "fashion_mnist", "metrics": {}})
    assert run_state(run.path, ["svm:voc2007"]).state == "failed"  # trained, its VOC07 SVMs missing
    assert "svm:voc2007" in run_state(run.path, ["svm:voc2007"]).detail
    assert run_state(run.path, ["svm"]).state == "done"
    run.write_eval("svm-voc2007", {"protocol": "svm", "dataset": "voc2007", "metrics": {}})
    assert run_state(run.path, ["svm:voc2007"]).state == "done"


def test_dry_run_prints_every_run_and_runs_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, "sweep.grid = {'tiny_train.lr': [0.1, 0.2, 0.3]}\nsweep.seeds = [0, 1]\n")
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    for run in load_sweep(path).runs:
        assert run.run_id in printed
    assert printed.count("pending") == 6
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------- debug executor
def test_debug_sweep_records_runs_and_rerun_skips_complete_ones(tmp_path):
    path = write_sweep(tmp_path, "sweep.name = 'dbg'\nsweep.grid = {'tiny_train.lr': [0.25, 0.5]}\n"
                                 "sweep.seeds = [3]\ntiny_train.steps = 2\n")
    out = tmp_path / "runs"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out)]) == 0
    by_lr = {}
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta, result = read_json(run_dir / "meta.json"), read_json(run_dir / "result.json")
        assert result["status"] == "done" and result["steps"] == 2
        assert result["seen"]["lr"] == meta["bindings"]["tiny_train.lr"]  # the worker saw the swept value
        assert (meta["seed"], result["seen"]["seed"], meta["sweep"], meta["variant"]) == (3, 3, "dbg", None)
        assert meta["run_id"] == run_dir.name == run_id({"tiny_train.lr": result["seen"]["lr"]}, 3, None)
        assert read_json(run_dir / "job.json")["executor"] == "debug"
        by_lr[result["seen"]["lr"]] = run_dir
    assert set(by_lr) == {0.25, 0.5}
    assert [r["run_id"] for r in read_json(out / "sweep.json")["runs"]] == [by_lr[0.25].name, by_lr[0.5].name]

    (by_lr[0.5] / "result.json").unlink()  # one run lost its result: only it runs again
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out)]) == 0
    assert read_json(by_lr[0.25] / "meta.json")["restarts"] == 0
    assert read_json(by_lr[0.5] / "meta.json")["restarts"] == 1
    assert starts(by_lr[0.5])[-1]["from_step"] == 2  # resumed from its last checkpoint


def test_redirected_sweep_output_is_a_few_lines_per_run_with_the_time_left(tmp_path):
    path = write_sweep(tmp_path, "sweep.name = 'bar'\nsweep.grid = {'tiny_train.lr': [0.1, 0.2, 0.3]}\n"
                                 "sweep.seeds = [0]\ntiny_train.steps = 1\n")
    proc = subprocess.run(cli_command("sweep", str(path), "--executor", "debug", "--out", str(tmp_path / "runs")),
                          capture_output=True, text=True, timeout=PATIENCE_S, env=worker_env())
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3 * 3, proc.stderr
    bar = next(line for line in reversed(lines) if "3/3" in line)  # the bar's last state: estimated, not -:--:--
    assert "left" in bar and "-:--:--" not in bar


def test_failed_run_has_its_reason_in_status_and_is_resubmitted(tmp_path):
    path = write_sweep(tmp_path, "sweep.name = 'boom'\ntiny_train.steps = 2\n"
                                 "sweep.variants = {'ok': [], 'boom': ['tiny_train.fail_at = 2']}\n")
    out = tmp_path / "runs"
    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out)]) == 1
    runs = {r.variant: out / r.run_id for r in load_sweep(path).runs}
    assert run_state(runs["ok"]).state == "done"
    failed = run_state(runs["boom"])
    assert (failed.state, failed.detail) == ("failed", "RuntimeError: tiny job failed on purpose at step 2")
    printed = _status(out)
    row = next(line for line in printed.splitlines() if runs["boom"].name in line)
    assert "boom" in row and "failed" in row and "error [1]" in row  # the reason is one line under the table
    assert f"[1] RuntimeError: tiny job failed on purpose at step 2  (1 run: {runs['boom'].name})" in printed
    assert "1 done, 1 failed" in printed

    assert main(["sweep", str(path), "--executor", "debug", "--out", str(out)]) == 1
    assert read_json(runs["ok"] / "meta.json")["restarts"] == 0
    assert read_json(runs["boom"] / "meta.json")["restarts"] == 1
    assert starts(runs["boom"])[-1]["from_step"] == 1  # step 1 was checkpointed before the failure


def test_status_of_a_folder_that_is_not_a_sweep_is_a_user_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- local executor
def _intervals(out: Path) -> list[tuple[float, float]]:
    spans = []
    for run_dir in out.iterdir():
        rows = RunDir(run_dir).metrics() if run_dir.is_dir() else []
        times = [r["time"] for r in rows]
        if times:
            spans.append((min(times), max(times)))
    return spans


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_local_sweep_killed_midway_reruns_only_missing_runs(tmp_path):
    """3 runs, 2 at a time: kill the sweep command once the quick run is done (the slow one holds after its first
    step until stopped), re-run: the quick run is not run again, the interrupted slow one resumes from its
    checkpoint, and never more than 2 ran at once."""
    path = write_sweep(tmp_path, """
sweep.name = 'killme'
local.parallelism = 2
tiny_train.step_s = 0.5
sweep.zip = {'tiny_train.lr': [0.1, 0.2, 0.3], 'tiny_train.steps': [1, 6, 2], 'tiny_train.hold_at': [None, 1, None]}
""")
    out = tmp_path / "runs"
    runs = {r.bindings["tiny_train.lr"]: out / r.run_id for r in load_sweep(path).runs}
    cmd = cli_command("sweep", str(path), "--out", str(out))
    first = subprocess.Popen(cmd, cwd=tmp_path, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + PATIENCE_S
    while not ((runs[0.1] / "result.json").exists() and (runs[0.2] / "checkpoints" / "last.json").exists()):
        assert first.poll() is None and time.time() < deadline, first.stdout.read() if first.stdout else ""
        time.sleep(0.2)
    quick_result_mtime = (runs[0.1] / "result.json").stat().st_mtime_ns
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=PATIENCE_S) == 130
    assert run_state(runs[0.2]).state == "failed"  # its local job was stopped with the sweep command
    assert not (runs[0.2] / "result.json").exists()

    # the slow run held after step 1 until stopped, so it is unfinished whatever the machine's load
    second = subprocess.run([*cmd, "--bind", "tiny_train.hold_at = None"], cwd=tmp_path, env=worker_env(),
                            capture_output=True, text=True, timeout=PATIENCE_S)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 done already" in second.stderr
    assert (runs[0.1] / "result.json").stat().st_mtime_ns == quick_result_mtime
    assert len(starts(runs[0.1])) == 1 and read_json(runs[0.1] / "meta.json")["restarts"] == 0
    slow = starts(runs[0.2])
    assert len(slow) == 2 and slow[1]["from_step"] >= 1  # resumed, not restarted from scratch
    assert read_json(runs[0.2] / "result.json")["steps"] == 6
    assert read_json(runs[0.3] / "result.json")["status"] == "done"
    spans = _intervals(out)
    for t in {s for s, _ in spans}:
        assert sum(s <= t <= e for s, e in spans) <= 2


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_local_job_that_dies_without_a_result_is_failed_with_its_reason(tmp_path):
    path = write_sweep(tmp_path, "sweep.name = 'crash'\ntiny_train.steps = 3\n"
                                 "sweep.variants = {'crash': ['tiny_train.exit_at = 2'], "
                                 "'boom': ['tiny_train.fail_at = 1']}\n")
    out = tmp_path / "runs"
    proc = subprocess.run(cli_command("sweep", str(path), "--out", str(out), "--executor", "local"), cwd=tmp_path,
                          env=worker_env(), capture_output=True, text=True, timeout=PATIENCE_S)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    runs = {r.variant: out / r.run_id for r in load_sweep(path).runs}
    job_id = read_json(runs["crash"] / "job.json")["job_id"]
    crash = run_state(runs["crash"])
    assert crash.state == "failed" and f"local job {job_id} ended without a result" in crash.detail
    assert not (runs["crash"] / "result.json").exists()
    printed = _status(out)
    assert "ended without a result" in printed and "RuntimeError: tiny job failed on purpose at step 1" in printed

    # fixed (a later --bind wins over the variants' lines; run ids stay): both run again, resume and finish
    proc = subprocess.run(cli_command("sweep", str(path), "--out", str(out), "--bind", "tiny_train.exit_at = None",
                                      "--bind", "tiny_train.fail_at = None"),
                          cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=PATIENCE_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for variant, run_dir in runs.items():
        assert read_json(run_dir / "result.json")["steps"] == 3
        assert read_json(run_dir / "meta.json")["restarts"] == 1
        assert starts(run_dir)[-1]["from_step"] == {"crash": 1, "boom": 0}[variant]
    assert read_json(runs["boom"] / "result.previous.json")["status"] == "failed"  # the failure stays readable


def test_worker_gets_the_thread_limit(tmp_path):
    """The local executor's per-job thread count reaches the worker's environment."""
    from pirl_ablate.sweep.executors import make_job

    path = write_sweep(tmp_path, "local.threads_per_job = 3\nslurm.cpus_per_task = 5\n")
    sweep = load_sweep(path)
    assert make_job("local", sweep, sweep.runs[0], tmp_path).threads == 3
    assert make_job("slurm", sweep, sweep.runs[0], tmp_path).threads == 5
    job = make_job("local", sweep, sweep.runs[0], tmp_path)
    code = ("import os, pickle, sys; job = pickle.load(sys.stdin.buffer); job._limit_threads(); "
            "print(os.environ['OMP_NUM_THREADS'])")
    import cloudpickle

    proc = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(job), capture_output=True,
                          env=worker_env(), timeout=PATIENCE_S)
    assert proc.stdout.decode().strip() == "3", proc.stderr.decode()


def test_an_exception_while_submitit_requeues_the_job_is_not_a_failure_of_the_run(tmp_path):
    """On preemption submitit calls the job's `checkpoint`, then `scontrol requeue`; under load the requeue's SIGTERM
    can reach `scontrol` first and surface in the training as CalledProcessError. That run goes on in the requeued
    job, so its folder must not say failed; the same exception without a requeue is the run's failure."""
    import pickle

    from pirl_ablate.sweep.job import SweepJob

    path = write_sweep(tmp_path, "sweep.name = 'requeue'\ntiny_train.fail_at = 2\n")
    run = load_sweep(path).runs[0]
    job = SweepJob(run, tmp_path / "requeued", "requeue", "sweep_jobs.run_tiny")
    job.checkpoint()  # what submitit does first on preemption
    with pytest.raises(RuntimeError, match="failed on purpose"):
        job()
    assert RunDir(tmp_path / "requeued").status() == "running"  # started, no result: the requeued job resumes it

    fresh = pickle.loads(pickle.dumps(job))  # the job as the requeue starts it again: no longer requeueing
    fresh.run_dir = str(tmp_path / "failed")
    with pytest.raises(RuntimeError):
        fresh()
    result = RunDir(tmp_path / "failed").result()
    assert result["status"] == "failed" and "failed on purpose at step 2" in result["reason"]

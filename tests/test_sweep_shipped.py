"""The shipped sweep files expand, bind what their comments say, and a real tiny sweep trains and evaluates end to
end through the local executor (pirl_ablate.build.run_training + pirl_ablate.evaluate.run_evaluations)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import gin
import pytest
from sweep_jobs import PATIENCE_S, cli_command, worker_env

from pirl_ablate import config
from pirl_ablate.runs import read_json
from pirl_ablate.sweep import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "sweeps").glob("*.gin")) + sorted((REPO / "sweeps" / "paper").glob("*.gin"))

# name, number of runs, swept bindings, variants (None: no variants)
EXPECTED = {
    "lambda": (18, {"PIRL.lambda_": [0.0, 0.25, 0.5, 0.75, 1.0]}, [None, "random init"]),  # + its baseline
    "num_permutations": (6, {"jigsaw.num_permutations": [10, 100, 1000]}, ["PIRL", "Jigsaw"]),
    "negatives": (4, {"PIRL.num_negatives": [256, 1024, 4096, 8192]}, None),
    "pretext": (5, {}, ["Rotation", "Jigsaw", "PIRL (Rotation)", "PIRL (Jigsaw)", "PIRL (Rotation+Jigsaw)"]),
    "layers": (4, {}, ["PIRL", "Jigsaw", "NPID++", "random init"]),
    "loss_variants": (7, {}, ["NPID", "NPID++", "PIRL", "Jigsaw", "Rotation", "random init", "supervised"]),
    "fidelity": (18, {}, ["PIRL (Jigsaw)", "NPID", "Jigsaw", "Rotation", "PIRL (Rotation+Jigsaw)", "random init"]),
    "transfer": (5, {}, ["PIRL", "NPID++", "Jigsaw", "random init", "supervised"]),
    "negative_source": (7, {"train.negatives": ["in_batch", "memory_bank", "momentum_queue"]},
                        ["PIRL", "NPID", "random init"]),
}
# the smoke recipe's choices, one changed at a time (sweeps/recipe.gin): what each variant binds beyond the shipped
# recipe; a study of the smoke scale itself, so it has no paper twin
RECIPE = {
    "shipped (NCE, tau 0.1, Z momentum 0.5, warm bank)": {"PIRL.estimator": "nce", "PIRL.tau": 0.1,
                                                          "PIRL.z": "ema", "PIRL.z_momentum": 0.5,
                                                          "MemoryBank.init": "features"},
    "tau 0.07 (the paper)": {"PIRL.tau": 0.07},
    "tau 0.2": {"PIRL.tau": 0.2},
    "InfoNCE": {"PIRL.estimator": "infonce"},
    "fixed Z": {"PIRL.z": "fixed"},
    "Z momentum 0.99": {"PIRL.z_momentum": 0.99},
    "random bank": {"MemoryBank.init": "random", "PIRL.z": "ema", "PIRL.z_momentum": 0.5},
    "random bank, Z momentum 0.99": {"MemoryBank.init": "random", "PIRL.z_momentum": 0.99},
    "random bank, fixed Z, tau 0.07 (the paper)": {"MemoryBank.init": "random", "PIRL.z": "fixed",
                                                   "PIRL.tau": 0.07},
    "small stem (3x3, no pool)": {"Backbone.small_stem": True},
    "10 px patches (whole cells)": {"jigsaw.patch_size": 10},
    "64 px images": {"train.image_size": 64, "image.size": 64},
    "5 epochs": {"train.epochs": 5},
    "N = 512": {"PIRL.num_negatives": 512},
}
SMOKE_ONLY = {"recipe"}
EXPECTED["recipe"] = (3 * (len(RECIPE) + 3), {}, [*RECIPE, "NPID", "Jigsaw", "random init"])
# what each variant's config must bind (the method it trains, and the transform where it has one)
VARIANT_LOSS = {"NPID": "npid", "NPID++": "npid", "PIRL": "pirl", "Jigsaw": "jigsaw", "Rotation": "rotation",
                "random init": "npid", "supervised": "supervised", "PIRL (Rotation)": "pirl",
                "PIRL (Jigsaw)": "pirl", "PIRL (Rotation+Jigsaw)": "pirl", **{name: "pirl" for name in RECIPE}}
VARIANT_TRANSFORM = {"PIRL": "jigsaw", "Jigsaw": "jigsaw", "Rotation": "rotation", "PIRL (Rotation)": "rotation",
                     "PIRL (Jigsaw)": "jigsaw", "PIRL (Rotation+Jigsaw)": "rotation+jigsaw"}


def test_every_figure_and_table_has_a_smoke_sweep_and_a_paper_twin():
    names = {p.relative_to(REPO / "sweeps").as_posix() for p in SWEEPS}
    for name in EXPECTED:
        assert f"{name}.gin" in names and (f"paper/{name}.gin" in names) != (name in SMOKE_ONLY)


def test_each_recipe_variant_changes_what_it_names_and_keeps_the_main_job_setting():
    """sweeps/recipe.gin: a variant's own bindings win over gin/scale/smoke.gin's, and every run keeps the main
    job's 3,000 images and 3 epochs (but '5 epochs'), lambda 0.5 for the PIRL variants."""
    sweep = load_sweep(REPO / "sweeps" / "recipe.gin")
    seen = set()
    for run in sweep.runs:
        config.parse_text(run.config, finalize=False)
        assert gin.query_parameter("fashion_mnist.subset") == 3000
        assert gin.query_parameter("train.epochs") == (5 if run.variant == "5 epochs" else
                                                       0 if run.variant == "random init" else 3)
        for key, value in RECIPE.get(run.variant, {}).items():
            assert gin.query_parameter(key) == value, (run.variant, key)
        if run.variant in RECIPE:
            assert gin.query_parameter("PIRL.lambda_") == 0.5
            seen.add(run.variant)
        gin.clear_config()
    assert seen == set(RECIPE)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.relative_to(REPO).as_posix() for p in SWEEPS])
def test_shipped_sweep_expands_and_each_run_binds_its_values(path):
    sweep = load_sweep(path)
    paper = path.parent.name == "paper"
    base = path.stem
    assert sweep.name == ("paper_" if paper else "") + base  # twins never share a run folder with smoke runs
    count, axes, variants = EXPECTED[base]
    if not paper:
        assert len(sweep.runs) == count
        assert {k: sorted({r.bindings[k] for r in sweep.runs if k in r.bindings}) for k in axes} == axes
    assert sorted({r.variant for r in sweep.runs}, key=str) == sorted(variants or [None], key=str)
    assert sweep.settings.executor == ("slurm" if paper else "local")
    for run in sweep.runs:
        config.parse_text(run.config, finalize=False)  # what the worker does
        for key, value in run.bindings.items():
            assert gin.query_parameter(key) == value
        assert gin.query_parameter("train.seed") == run.seed
        if run.variant is not None:
            assert gin.query_parameter("train.method") == VARIANT_LOSS[run.variant]
            if run.variant in VARIANT_TRANSFORM:
                assert gin.query_parameter("train.transform") == VARIANT_TRANSFORM[run.variant]
        if run.variant == "random init":
            assert gin.query_parameter("train.epochs") == 0
        assert gin.query_parameter("train.dataset") == ("imagefolder" if paper else "fashion_mnist")
    gin.clear_config()


def test_paper_twins_run_on_32_gpus_and_the_smoke_sweeps_fit_this_machine():
    smoke, paper = load_sweep(REPO / "sweeps" / "lambda.gin"), load_sweep(REPO / "sweeps" / "paper" / "lambda.gin")
    assert (paper.slurm.nodes * paper.slurm.tasks_per_node, paper.slurm.gpus_per_node) == (32, 8)
    assert (smoke.local.parallelism, smoke.local.threads_per_job) == (2, 1)
    assert (smoke.slurm.partition, smoke.slurm.gpus_per_node, smoke.slurm.cpus_per_task) == ("debug", 0, 1)


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_real_tiny_sweep_trains_and_evaluates_through_the_local_executor(tmp_path):
    """Two PIRL runs (lambda 0 and 0.5) on 256 Fashion-MNIST images, one epoch, two at a time: each run folder
    gets the swept value in its config, a done result, and linear + kNN evaluations under the sweep's bindings
    of the protocols."""
    sweep_file = tmp_path / "tiny_lambda.gin"
    sweep_file.write_text("""
include 'pirl_jigsaw.gin'
fashion_mnist.subset = 256
test/fashion_mnist.subset = 128
train.epochs = 1
train.batch_size = 64
train.monitor_every = 0
PIRL.num_negatives = 64
sweep.grid = {'PIRL.lambda_': [0.0, 0.5]}
sweep.evaluate = ['linear', 'knn']
knn_eval.k = 7
local.parallelism = 2
local.threads_per_job = 1
""")
    out = tmp_path / "runs"
    proc = subprocess.run(cli_command("sweep", str(sweep_file), "--out", str(out)), cwd=tmp_path, env=worker_env(),
                          capture_output=True, text=True, timeout=PATIENCE_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for run in load_sweep(sweep_file).runs:
        run_dir = out / run.run_id
        result, meta = read_json(run_dir / "result.json"), read_json(run_dir / "meta.json")
        assert result["status"] == "done" and result["epochs"] == 1
        assert meta["bindings"] == run.bindings and meta["sweep"] == "tiny_lambda" and meta["restarts"] == 0
        config.parse_text((run_dir / "config.gin").read_text(), finalize=False)
        assert gin.query_parameter("PIRL.lambda_") == run.bindings["PIRL.lambda_"]
        for protocol in ("linear", "knn"):
            evaluation = read_json(run_dir / "evals" / f"{protocol}-fashion_mnist.json")
            assert 0.0 <= evaluation["metrics"]["res5"]["top1"] <= 100.0
        assert read_json(run_dir / "evals" / "knn-fashion_mnist.json")["hyperparameters"]["k"] == 7  # the sweep's
    gin.clear_config()


def test_paper_transfer_sweep_scores_voc07_with_svms(tmp_path, capsys, monkeypatch):
    """Table 2's VOC07 column is VOC07 SVMs (paper Section 5.1): the dry run says so, and the runs are done only
    once evals/svm-voc2007.json exists."""
    from pirl_ablate.cli import main
    from pirl_ablate.sweep.spec import eval_targets

    monkeypatch.chdir(REPO)
    assert main(["sweep", "sweeps/paper/transfer.gin", "--dry-run", "--out", str(tmp_path / "runs")]) == 0
    assert "svm on voc2007" in capsys.readouterr().out
    assert ("svm", "voc2007") in eval_targets(load_sweep(REPO / "sweeps/paper/transfer.gin").settings.evaluate)

"""Report speed: load 1,000 run folders into the results frame and render a table (target: under 2 s).

Writes 1,000 synthetic run folders into a temporary folder (800 of a lambda sweep, 200 of the loss variants; each
with meta.json, result.json, metrics.jsonl and linear + kNN evaluations: 14 metric rows per run), then times, in
this process:

    ours      load_results (os.walk that stops at run folders) + the registered figure6 and table2 reports
              rendered as rich and Markdown
    baseline  the same records read through the generic RunDir API (iter_run_dirs: rglob over the whole tree,
              RunDir.meta/result/evals per run) into a DataFrame

and the whole `pirl-ablate report --figure 6 --format markdown` command in a fresh interpreter (imports included).

    .venv/bin/python benchmarks/report.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from pirl_ablate.layers import LAYERS
from pirl_ablate.report.registry import TABLES
from pirl_ablate.report.render import to_markdown, to_rich
from pirl_ablate.report.results import load_results
from pirl_ablate.runs import RunDir, iter_run_dirs

VARIANTS = ("pirl", "npid", "npid++", "jigsaw", "rotation", "random_init", "supervised")


def write_runs(root: Path, count: int) -> None:
    """`count` run folders. One is written through RunDir; the others copy its meta.json with their own fields,
    written plainly (no fsync) so that building the benchmark input does not dominate the benchmark."""
    template = RunDir(root / "template")
    template.start("PIRL.lambda_ = 0.5\n", seed=0, run_id="template", bindings={}, sweep="template")
    meta0 = template.meta()
    for i in range(count):
        if i < count * 4 // 5:
            sweep, variant, bindings = "lambda", None, {"PIRL.lambda_": [0.0, 0.25, 0.5, 0.75, 1.0][i % 5]}
        else:
            sweep, variant, bindings = "loss_variants", VARIANTS[i % len(VARIANTS)], {}
        path = root / sweep / f"run{i:04d}"
        (path / "evals").mkdir(parents=True)
        top1 = 40.0 + (i * 37 % 100) / 5
        files = {
            "meta.json": {**meta0, "run_id": path.name, "seed": i // 5, "bindings": bindings, "sweep": sweep,
                          "variant": variant},
            "result.json": {"status": "done", "epochs": 10, "final": {"loss": 1.0 + i % 7, "knn_top1": top1},
                            "wall_s": 100.0 + i},
            "evals/linear-fashion_mnist.json": {
                "protocol": "linear", "dataset": "fashion_mnist", "bn": "precise", "wall_s": 3.0,
                "metrics": {layer: {"top1": top1 - 5 + j, "top5": top1 + 20} for j, layer in enumerate(LAYERS)}},
            "evals/knn-fashion_mnist.json": {"protocol": "knn", "dataset": "fashion_mnist",
                                             "metrics": {"res5": {"top1": top1 - 2}}},
        }
        for name, obj in files.items():
            (path / name).write_text(json.dumps(obj))
        (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 2.0 - e / 10}) + "\n"
                                                    for e in range(10)))


def ours(root: Path) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    frame = load_results(root)
    t1 = time.perf_counter()
    sink = Console(file=io.StringIO(), width=160)
    for name in ("figure6", "table2"):
        report = TABLES.get(name)(frame)
        sink.print(to_rich(report))
        to_markdown(report)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(frame)


def baseline(root: Path) -> float:
    t0 = time.perf_counter()
    records = []
    for run in iter_run_dirs(root):
        meta, result = run.meta() or {}, run.result() or {}
        base = {"run_id": meta.get("run_id"), "sweep": meta.get("sweep"), "variant": meta.get("variant"),
                "seed": meta.get("seed"), "status": result.get("status"), **meta.get("bindings", {})}
        for ev in run.evals().values():
            for group, metrics in ev["metrics"].items():
                for metric, value in metrics.items():
                    records.append({**base, "protocol": ev["protocol"], "dataset": ev["dataset"], "group": group,
                                    "metric": metric, "value": value})
    pd.DataFrame.from_records(records)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(root, args.runs)
        load_s, render_s, rows = ours(root)
        base_s = baseline(root)
        env = {**os.environ, "PIRL_ABLATE_QUIET": "1"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pirl_ablate.cli", "report", "--figure", "6", "--format", "markdown",
                        "--results", str(root), "--out", str(Path(tmp) / "reports")], check=True, env=env,
                       stdout=subprocess.DEVNULL, cwd=tmp)
        cli_s = time.perf_counter() - t0
    table = Table(title=f"report: {args.runs} run folders, {rows} frame rows (target: load + render < 2 s)")
    for col in ("step", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    table.add_row("ours: load_results", f"{load_s:.3f}")
    table.add_row("ours: figure6 + table2, rich + markdown", f"{render_s:.3f}")
    table.add_row("ours: load + render", f"{load_s + render_s:.3f}")
    table.add_row("baseline: iter_run_dirs + RunDir API -> DataFrame", f"{base_s:.3f}")
    table.add_row("CLI `report --figure 6` in a fresh interpreter (imports, PNG)", f"{cli_s:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()

"""How much the tiny PIRL run of tests/test_train.py learns across CPU kernels, thread counts and seeds.

Each setting trains the test's run (tests/tiny_pirl.py's TINY, 15 epochs, kNN monitor every 5) in a fresh process
with the setting's environment, then prints one JSON line: the first and last epoch's loss, the drop, how far the
last loss ends below InfoNCE's chance value ln(N + 1), and the last kNN top-1. The environments emulate another
CPU on any machine: torch's own kernels (ATEN_CPU_CAPABILITY), oneDNN's convolutions (DNNL_MAX_CPU_ISA) and MKL
(MKL_ENABLE_INSTRUCTIONS) each pick their instruction set.

    python benchmarks/cpu_spread.py native:1:0 default:1:0 old:1:0 old:2:0     # ENV:THREADS:SEED ...
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_pirl import NEGATIVES, TINY  # noqa: E402

ENVS = {"native": {}, "default": {"ATEN_CPU_CAPABILITY": "default"},
        "old": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}
CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.runs import RunDir
run_training(config.parse([sys.argv[1]]), sys.argv[2])
rows = RunDir(sys.argv[2]).metrics()
print(json.dumps({"first": rows[0]["loss"], "last": rows[-1]["loss"], "knn": rows[-1]["knn_top1"]}))
"""


def measure(env: str, threads: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tiny.gin"
        config.write_text(TINY + f"train.epochs = 15\ntrain.monitor_every = 5\ntrain.seed = {seed}\n")
        done = subprocess.run([sys.executable, "-c", CHILD, str(config), str(Path(tmp) / "run"), str(threads)],
                              env={**os.environ, **ENVS[env], "OMP_NUM_THREADS": str(threads)},
                              capture_output=True, text=True, check=True)
    m = json.loads(done.stdout.strip().splitlines()[-1])
    return {"env": env, "threads": threads, "seed": seed, **m, "drop": m["first"] - m["last"],
            "below_chance": math.log(NEGATIVES + 1) - m["last"]}


if __name__ == "__main__":
    for setting in sys.argv[1:]:
        env, threads, seed = setting.split(":")
        print(json.dumps(measure(env, int(threads), int(seed))), flush=True)

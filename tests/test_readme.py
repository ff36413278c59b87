"""The README's Python examples run as written: training PIRL without gin, and adding a method in one file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from pirl_ablate import checkpoint
from pirl_ablate.runs import RunDir

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def python_block(section: str) -> str:
    """The first ```python block after the heading `### <section>`."""
    after = README[README.index(f"### {section}\n"):]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def test_training_from_python_example_runs_and_its_run_folder_evaluates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_block("Training from Python"), "README.md", "exec"), namespace)
    result = namespace["result"]
    run = RunDir(tmp_path / "runs" / "python_pirl")
    assert result["status"] == "done" and result["steps"] == 2 * 64 // 16
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    final = result["final"]
    assert all(math.isfinite(final[k]) for k in ("loss", "loss_image", "loss_transformed", "neg_sim_image"))
    # the checkpoint rebuilds the trained method without gin: same class, same weights, same embeddings
    loaded = checkpoint.load_method(run.path)
    trained = namespace["pirl"].eval()
    assert type(loaded) is type(trained) and loaded.config() == trained.config()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_image(x), trained.embed_image(x))
    record = checkpoint.run_record(run.path)
    assert record["dataset"]["name"] == "synthetic" and record["image_size"] == 16
    assert record["transform"] == {"name": "jigsaw", "kwargs": {"crop_size": None, "patch_size": None}}


def test_adding_a_method_example_registers_and_trains():
    from pirl_ablate.methods import METHODS, build_method
    from pirl_ablate.models import Backbone
    from pirl_ablate.transforms import build_transform

    namespace: dict = {}
    exec(compile(python_block("Adding a method"), "README.md", "exec"), namespace)
    assert "align" in METHODS.names()
    torch.manual_seed(0)
    method = build_method("align", backbone=Backbone("resnet18", width_multiplier=0.5), embed_dim=16, num_patches=4,
                          transform=build_transform("jigsaw", grid=2, crop_size=None, patch_size=None))
    assert method.config() == {"embed_dim": 16, "num_patches": 4}
    images = torch.rand(4, 3, 16, 16)
    loss, parts = method(images, torch.arange(4), torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
    loss.backward()
    # independent: 1 - mean cosine of the two embeddings is what the toy minimises, in [0, 2]
    value = loss.detach().item()
    assert math.isclose(value, 1 - parts["cos"].item(), rel_tol=1e-5) and 0 <= value <= 2
    assert method.f.weight.grad is not None and method.g.mix.weight.grad is not None

"""TensorBoard: a real tiny training run's event files hold every number of its metrics.jsonl at the row's step,
and the views grid shows the batch's patches tiled 3 x 3 as the network receives them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator
from tiny_pirl import tiny_config

from pirl_ablate import config
from pirl_ablate.build import run_training
from pirl_ablate.runs import read_jsonl
from pirl_ablate.tensorboard import GRID_IMAGES, TB_FOLDER


def test_event_files_hold_every_metrics_number_and_one_views_grid(tmp_path: Path):
    run_training(config.parse([tiny_config(tmp_path, epochs=2)], finalize=False), tmp_path / "run")

    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    events = EventAccumulator(str(tmp_path / "run" / TB_FOLDER), size_guidance={SCALARS: 0, IMAGES: 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {k for row in rows for k, v in row.items() if k not in ("step", "epoch") and isinstance(v, float)}
    assert {"loss", "loss_image", "loss_transformed", "lr", "images_per_s", "knn_top1", "pos_sim_transformed",
            "neg_sim_transformed", "uniformity", "rel_invariance"} <= expected == tags
    for tag in expected:
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged == pytest.approx({row["step"]: row[tag] for row in rows}, rel=1e-6), tag

    grids = {tag: events.Images(tag) for tag in events.Tags()["images"]}
    assert set(grids) == {"views/input", "views/image", "views/transformed"}
    assert all(len(g) == 1 for g in grids.values())  # once per run
    # GRID_IMAGES samples, 4 per row, 2 px padding; a jigsaw sample of 16 px images is 3 x 3 patches of 4 px (15 px
    # crop, 5 px cells, 64/85 of a cell) with show.tile's 4 px gaps: 3*4 + 2*4 = 20 px
    transformed = grids["views/transformed"][0]
    assert (transformed.width, transformed.height) == (4 * (20 + 2) + 2, GRID_IMAGES // 4 * (20 + 2) + 2)

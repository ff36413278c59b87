"""TensorBoard event files in every run folder, so `tensorboard --logdir runs/` shows every run by its folder.

- `log_scalars(run_dir, row)`: every number of a metrics.jsonl row (loss and its terms, lr, Z, alignment,
  uniformity, kNN, images/s, ...), tagged with its key as metrics.jsonl spells it (nested keys joined by "/"), at
  the row's optimiser step. `RunDir.log_metrics` calls it for every row, so the two always hold the same numbers.
- `log_views(run_dir, images, image_view, view)`: once per run, grids of the first images of a training batch, of
  their augmented image view and of their pretext view (a patch view tiled as the network receives the patches).

Event files go to `<run>/tensorboard/`; a resumed run appends a new file there and TensorBoard merges them. The
events are written with the `tensorboard` package's own EventFileWriter (what torch's SummaryWriter wraps), so that
logging a metrics row never imports torch: a process that only keeps a run folder (a sweep worker's bookkeeping)
stays light. The views' PNG summaries are encoded by torch.utils.tensorboard.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pirl_ablate.files import no_link

if TYPE_CHECKING:
    from torch import Tensor

TB_FOLDER = "tensorboard"
GRID_IMAGES = 8  # samples drawn in each views grid

_writers: dict[Path, Any] = {}  # one event file writer per run folder and process


def writer(run_dir: str | os.PathLike):
    """The process's EventFileWriter for `run_dir` (created on first use, with the folder)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    path = Path(run_dir).resolve() / TB_FOLDER
    if path not in _writers:
        no_link(Path(run_dir) / TB_FOLDER)
        _writers[path] = EventFileWriter(str(path))
    return _writers[path]


def _write(run_dir: str | os.PathLike, summaries: list[Any], step: int | None) -> None:
    """Each Summary proto as one event at `step` (None: no step), then flush."""
    from tensorboard.compat.proto.event_pb2 import Event

    w = writer(run_dir)
    for summary in summaries:
        event = Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = step
        w.add_event(event)
    w.flush()


def scalars(row: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) for every real number of `row`, nested dicts flattened to "a/b"; the step counters, flags and
    text are left out."""
    for key, value in row.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalars(value, prefix=f"{tag}/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and tag not in ("step", "epoch"):
            yield tag, float(value)


def log_scalars(run_dir: str | os.PathLike, row: dict[str, Any]) -> None:
    """Write the row's numbers at its "step" (else its "epoch"), flushed so a live TensorBoard sees them."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    step = row.get("step", row.get("epoch"))
    summaries = [Summary(value=[Summary.Value(tag=tag, simple_value=value)]) for tag, value in scalars(row)]
    _write(run_dir, summaries, step if isinstance(step, int) else None)


def log_views(run_dir: str | os.PathLike, images: Tensor, image_view: Tensor | None, view: Any,
              step: int = 0) -> None:
    """Grids of the first `GRID_IMAGES` samples: `views/input` (images (B, C, H, W) in [0, 1]), `views/image` (the
    augmented image view, when the loss uses one) and `views/transformed` (the pretext View: (B, C, h, w) images
    or (B, P, C, h, w) patches, each sample's patches tiled row by row in the order the network sees them)."""
    import torch
    from torch.utils.tensorboard.summary import image
    from torchvision.utils import make_grid

    from pirl_ablate.transforms.show import tile

    grids = {"views/input": images[:GRID_IMAGES]}
    if image_view is not None:
        grids["views/image"] = image_view[:GRID_IMAGES]
    if view is not None:
        data = view.data[:GRID_IMAGES]
        grids["views/transformed"] = data if data.dim() == 4 else torch.stack([tile(sample) for sample in data])
    summaries = []
    for tag, batch in grids.items():
        grid = make_grid(batch.detach().float().clamp(0, 1).cpu(), nrow=min(len(batch), 4), padding=2, pad_value=1)
        summaries.append(image(tag, grid, dataformats="CHW"))
    _write(run_dir, summaries, step)


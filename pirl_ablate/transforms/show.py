"""Drawing a transform's views (`pirl-ablate show-transform`, TensorBoard's view grids): images next to the views
each part of a transform makes of them.

Each row is one image: the input, then the view after each part of the transform (`rotation+jigsaw`: the rotated
image, then the jigsaw patches of it), so every part of a composition is visible. A patch view is drawn as a grid
of its patches in the order the network receives them (`data[:, j]` at position j, row-major), each patch
captioned with the grid cell it came from; every panel is titled in full (wrapped, never clipped) with what that
part drew (rotation in degrees, permutation index) and the last with the label the network is trained on. Small
views are drawn upscaled with nearest-neighbour pixels, so what the network sees is what is drawn.
"""

from __future__ import annotations

import io
import math
import textwrap

import torch
import torch.nn.functional as F
from torch import Tensor

from pirl_ablate.registry import PLAIN, Configuration
from pirl_ablate.transforms.base import View, centre_squares, with_sizes
from pirl_ablate.transforms.compose import Compose
from pirl_ablate.transforms.kornia_aug import PREFIX as KORNIA_PREFIX
from pirl_ablate.transforms.kornia_aug import SEED_KEY

GAP = 4  # pixels between drawn patches
SIZE = 256  # without a configured train.image_size: the input size the paper's jigsaw sizes are made for
TITLE_WIDTH = 34  # characters per panel title line


def load_images(dataset: str, count: int, generator: torch.Generator, size: int = SIZE,
                configuration: Configuration = PLAIN) -> Tensor:
    """(count, 3, size, size) float in [0, 1]: images drawn at random from the test split of `dataset`, any
    registered dataset (`pirl-ablate list datasets`), as training and evaluation read it (`configuration`: its
    settings, e.g. the folder it reads)."""
    from pirl_ablate.data.loader import pad_to_canvas
    from pirl_ablate.data.registry import build_dataset

    data = build_dataset(dataset, split="test", configuration=configuration)
    picks = torch.randperm(len(data), generator=generator)[:count].tolist()
    items = [data[i][0] for i in picks]
    if len({tuple(im.shape) for im in items}) > 1:  # images of their own sizes (imagefolder): centre squares
        canvas, sizes = pad_to_canvas(items)
        items = list(centre_squares(with_sizes(canvas.float(), sizes), size).round().clamp(0, 255).to(torch.uint8))
    chosen = torch.stack(items).float().div(255)
    chosen = F.interpolate(chosen, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return chosen.expand(-1, 3, -1, -1) if chosen.shape[1] == 1 else chosen


def apply_stages(name: str, transform, images: Tensor, generator: torch.Generator) -> list[tuple[str, View]]:
    """[(part name, its View)] for each part of a composition, each part applied to the previous part's view with
    `generator` as `Compose.__call__` applies them; the last entry is the composition's own View (same draws, so the
    same data) with its composed label. A single transform gives one entry."""
    if not isinstance(transform, Compose):
        return [(name, transform(images, generator))]
    start = generator.get_state()
    stages, data = [], images
    for part_name, part in transform.parts:
        view = part(data, generator)
        stages.append((part_name, view))
        data = view.data
    replay = torch.Generator(device=generator.device)
    replay.set_state(start)
    stages[-1] = (stages[-1][0], transform(images, replay))
    return stages


def describe(view: View, i: int, with_label: bool = True, part: str | None = None) -> str:
    """What a view drew for sample i, as a caption: rotation, permutation index, a Kornia augmentation's draws
    (whether it applied, each number it drew) and the covariant label. `part`: only that part's draws of a
    composition's View (its "<part>." keys)."""
    parts = []
    for key, value in view.params.items():
        if part is not None and "." in key and not key.startswith(f"{part}."):
            continue
        leaf = key.rsplit(".", 1)[-1]
        if part is not None and part.startswith(KORNIA_PREFIX):
            parts += _kornia_draw(leaf, value[i])
        elif leaf == "rotation":
            parts.append(f"rotated {90 * int(value[i])}° counter-clockwise")
        elif leaf == "perm_index":
            parts.append(f"permutation #{int(value[i])}")
    if with_label and view.label is not None:
        parts.append(f"label {int(view.label[i])} of {view.num_classes}")
    return ", ".join(parts)


def _kornia_draw(leaf: str, value: Tensor) -> list[str]:
    """A Kornia draw as caption text: "applied" / "not applied" for its batch_prob, "name 0.42" (or a tuple) for
    the numbers it drew; its seed is left out."""
    if leaf == SEED_KEY:
        return []
    if leaf == "batch_prob":
        return ["applied" if float(value) > 0.5 else "not applied"]
    numbers = [f"{float(v):.3g}" for v in value.flatten()[:4]]
    return [f"{leaf} {numbers[0]}" if len(numbers) == 1 else f"{leaf} ({', '.join(numbers)})"]


def render(images: Tensor, stages: list[tuple[str, View]], title: str) -> bytes:
    """PNG bytes: one row per image, the input then each part's view (patches in the order the network sees)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, columns = images.shape[0], 1 + len(stages)
    fig, axes = plt.subplots(count, columns, figsize=(3.4 * columns, 3.9 * count), squeeze=False,
                             layout="constrained")
    fig.suptitle(title)
    for i in range(count):
        axes[i, 0].imshow(_to_numpy(images[i]), interpolation="nearest")
        axes[i, 0].set_title("input", fontsize="small")
        for s, (name, view) in enumerate(stages, start=1):
            caption = f"{name}: {describe(view, i, with_label=s == len(stages), part=name) or 'view'}"
            axes[i, s].set_title(textwrap.fill(caption, TITLE_WIDTH, break_on_hyphens=False), fontsize="small")
            _draw_view(axes[i, s], view, i)
        for ax in axes[i]:
            ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _draw_view(ax, view: View, i: int) -> None:
    if not view.is_patches:
        ax.imshow(_to_numpy(view.data[i]), interpolation="nearest")
        return
    perm = next((v for k, v in view.params.items() if k.rsplit(".", 1)[-1] == "perm"), None)
    ax.imshow(_to_numpy(tile(view.data[i])), interpolation="nearest")
    patches, _, h, w = view.data[i].shape
    grid = math.ceil(patches ** 0.5)
    for j in range(patches):
        caption = f"cell {int(perm[i, j])}" if perm is not None else f"patch {j}"
        ax.text((j % grid) * (w + GAP) + 1, (j // grid) * (h + GAP) + 1, caption, fontsize="x-small", va="top",
                color="yellow", backgroundcolor=(0, 0, 0, 0.5))


def tile(patches: Tensor) -> Tensor:
    """(P, C, h, w) -> (C, H, W): patch j at row j // grid, column j % grid of a white-gapped square grid."""
    count, channels, h, w = patches.shape
    grid = math.ceil(count ** 0.5)
    out = patches.new_ones(channels, grid * (h + GAP) - GAP, grid * (w + GAP) - GAP)
    for j in range(count):
        top, left = (j // grid) * (h + GAP), (j % grid) * (w + GAP)
        out[:, top:top + h, left:left + w] = patches[j]
    return out


def _to_numpy(image: Tensor):
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()

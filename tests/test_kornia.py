"""Kornia augmentations as transforms: parameters drawn from the run's generator (same seed, same view; the global
generator untouched), the view equal to Kornia's functional op applied by hand with the recorded parameters, gin
bindings reaching Kornia's constructor, and a tiny run with one in a composition resuming bit-identically after
kill -9."""

from __future__ import annotations

import pytest
import torch
from kornia.enhance import solarize
from sigkill_resume import whole_and_killed
from tiny_pirl import tiny_config

from pirl_ablate import config
from pirl_ablate.errors import ConfigError
from pirl_ablate.gin_edge import GIN
from pirl_ablate.transforms import TRANSFORMS, build_transform


def _images(batch: int = 12, size: int = 8) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(5))


def test_solarize_draws_from_the_run_generator_and_matches_kornias_op_by_hand():
    t = build_transform("kornia:RandomSolarize", thresholds=0.3, additions=0.1, p=0.5)
    x = _images()
    global_state = torch.get_rng_state()
    view = t(x, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), global_state)  # Kornia's draw did not consume the global generator
    again = t(x, torch.Generator().manual_seed(0))
    other = t(x, torch.Generator().manual_seed(1))
    assert torch.equal(view.data, again.data) and not torch.equal(view.data, other.data)
    p = view.params
    assert {"thresholds", "additions", "batch_prob", "seed"} <= p.keys()
    assert all(v.shape[0] == len(x) for v in p.values())
    assert ((p["thresholds"] - 0.5).abs() <= 0.3 + 1e-6).all() and (p["additions"].abs() <= 0.1 + 1e-6).all()
    applied = p["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < len(x)  # p = 0.5 over 12 images: some of each (seed 0)
    by_hand = solarize(x[applied], p["thresholds"][applied], p["additions"][applied])
    assert torch.allclose(view.data[applied], by_hand, atol=1e-6)
    assert torch.equal(view.data[~applied], x[~applied])


def test_noise_drawn_while_applying_is_reproducible_and_chains_record_every_part():
    t = build_transform("rotation+kornia:RandomGaussianNoise", **{"kornia:RandomGaussianNoise": {"std": 0.1,
                                                                                                "p": 1.0}})
    x = _images()
    a, b = t(x, torch.Generator().manual_seed(3)), t(x, torch.Generator().manual_seed(3))
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, torch.rot90(x, 1, (-2, -1)))
    assert {"rotation.rotation", "kornia:RandomGaussianNoise.seed"} <= a.params.keys()
    assert a.num_classes == 4 and torch.equal(a.label, a.params["rotation.rotation"])
    noise = a.data - torch.stack([torch.rot90(img, int(k), (-2, -1)) for img, k in zip(x, a.label)])
    assert 0.07 < float(noise.std()) < 0.13  # std 0.1 noise over 12 x 3 x 8 x 8 values


def test_gin_binds_kornias_constructor_arguments(tmp_path):
    cfg = tmp_path / "k.gin"
    cfg.write_text("kornia.RandomSolarize.p = 1.0\nkornia.RandomSolarize.thresholds = 0.25\n")
    config.parse([cfg])
    t = build_transform("kornia:RandomSolarize", configuration=GIN)
    thresholds = t(_images(), torch.Generator().manual_seed(0)).params["thresholds"]
    assert t.module.p == 1.0 and ((thresholds - 0.5).abs() <= 0.25 + 1e-6).all()  # U(0.5 -+ 0.25)
    assert float((thresholds - 0.5).abs().max()) > 0.1  # (not Kornia's default range of 0.1)
    cfg.write_text("kornia.RandomSolarize.threshold = 0.25\n")
    with pytest.raises(ConfigError, match="threshold"):
        config.parse([cfg])
    assert "kornia:RandomAffine" in TRANSFORMS and "kornia:ColorJitter" in TRANSFORMS


@pytest.mark.slow
def test_a_run_with_kornia_in_a_composition_resumes_bit_identically_after_kill_9(tmp_path):
    cfg = tiny_config(tmp_path, "train.transform = 'kornia:RandomSolarize+jigsaw'\nkornia.RandomSolarize.p = 0.5\n",
                      epochs=4)
    a, b = whole_and_killed(cfg, tmp_path, epochs=4)
    assert a["record"]["transform"]["name"] == "kornia:RandomSolarize+jigsaw"
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:  # trunk, heads, memory bank, Z
        assert torch.equal(a["method"][key], b["method"][key]), f"{key} differs"

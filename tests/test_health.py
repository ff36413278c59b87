"""pirl_ablate.health against float64 transcriptions of each definition, hand-computed cases and known values."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from pirl_ablate import health
from pirl_ablate.losses.nce import nce_loss


def _unit(rows: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.norm(dim=1, keepdim=True)


def test_alignment_is_mean_positive_and_mean_negative_cosine():
    bank = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    queries = _unit([[1, 0.5, 0], [0, 0, 1]])
    positive = torch.tensor([0, 2])
    negatives = torch.tensor([[1, 3], [0, 3]])
    # by hand: q0 = (2, 1, 0)/sqrt5, q1 = e3
    s = 1 / math.sqrt(5)
    pos = (2 * s + 1) / 2
    neg = (1 * s + 3 * s / math.sqrt(2) + 0 + 0) / 4
    got_pos, got_neg = health.alignment(queries.float(), bank.float(), positive, negatives)
    assert got_pos == pytest.approx(pos, abs=1e-6)
    assert got_neg == pytest.approx(neg, abs=1e-6)


def test_uniformity_two_entries_is_exact():
    entries = _unit([[1, 0], [0.6, 0.8]])  # ||a - b||^2 = 0.16 + 0.64 = 0.8: every pair is (0, 1) or (1, 0)
    got = health.uniformity(entries, 64, torch.Generator().manual_seed(0))
    assert got == pytest.approx(-2 * 0.8, abs=1e-9)


def test_uniformity_collapsed_and_uniform_banks():
    gen = torch.Generator().manual_seed(1)
    collapsed = _unit([[0.3, 0.4, 0.5]] * 50)
    assert health.uniformity(collapsed, 500, gen) == pytest.approx(0.0, abs=1e-12)
    # uniform on S^(d-1), d = 128: ||x - y||^2 = 2 - 2c with c ~ N(0, 1/d), so log E exp(-2(2 - 2c)) ~ -4 + 8/d
    uniform = torch.nn.functional.normalize(torch.randn(4000, 128, generator=gen, dtype=torch.float64), dim=1)
    assert health.uniformity(uniform, 20000, gen) == pytest.approx(-4 + 8 / 128, abs=0.03)


def test_z_drift_is_log10_of_the_ratio():
    assert health.z_drift(1e5, 2.0, 500) == pytest.approx(2.0)
    assert health.z_drift(10.0, 1.0, 100) == pytest.approx(-1.0)


def test_relative_invariance_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]], dtype=torch.float64)  # normalised: e1, e2, e2
    same = (0 + 0 + math.sqrt(2)) / 3
    other = (2 + math.sqrt(2) + math.sqrt(2)) / 3  # a_i vs a_(i-1): (e1, -e1), (e2, e1), (-e1, e2)
    assert health.relative_invariance(a, b) == pytest.approx(same / other, rel=1e-12)


def test_relative_invariance_of_a_near_collapsed_network_is_about_one():
    """Raw distances call a network that maps everything to nearly one point perfectly invariant; relative to the
    distance between different images it is not."""
    gen = torch.Generator().manual_seed(2)
    centre = torch.randn(1, 64, generator=gen, dtype=torch.float64)
    a = centre + 1e-3 * torch.randn(512, 64, generator=gen, dtype=torch.float64)
    b = centre + 1e-3 * torch.randn(512, 64, generator=gen, dtype=torch.float64)
    raw = (torch.nn.functional.normalize(a, dim=1) - torch.nn.functional.normalize(b, dim=1)).norm(dim=1).mean()
    assert raw < 0.01
    assert health.relative_invariance(a, b) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("n", [1, 16, 2048])
def test_chance_loss_matches_eq4_with_scores_alike(n):
    """Paper Eq. 3-4 in float64: all scores s, Z = exp(s / tau) * |D| (its batch estimate), so p = 1/|D|."""
    size, tau, s = 5000, 0.07, 0.3
    p = math.exp(s / tau) / (math.exp(s / tau) * size)
    h = p / (p + n / size)
    expected = -math.log(h) - n * math.log(1 - h)
    assert health.chance_loss("nce", n) == pytest.approx(expected, rel=1e-9)
    library = nce_loss(torch.tensor(s, dtype=torch.float64), torch.full((n,), s, dtype=torch.float64), tau,
                       math.log(math.exp(s / tau) * size), size)
    assert float(library) == pytest.approx(expected, rel=1e-9)
    assert health.chance_loss("infonce", n) == pytest.approx(-math.log(1 / (n + 1)), rel=1e-12)


def test_health_warnings():
    healthy = {"pos_sim_transformed": 0.5, "neg_sim_transformed": 0.1, "pos_sim_image": 0.6, "neg_sim_image": 0.1,
               "loss": 7.0, "uniformity": -2.5, "z_drift": 0.2}
    assert health.health_warnings(healthy, chance=8.3) == []
    anti = {**healthy, "pos_sim_transformed": -0.4}
    (warning,) = health.health_warnings(anti, chance=8.3)
    assert "transformed" in warning and "-0.400" in warning
    runaway = {**healthy, "loss": 17.0, "loss_chance": 8.3}
    assert any("running away" in w for w in health.health_warnings(runaway))
    assert health.health_warnings({**healthy, "loss": 16.0}, chance=8.3) == []
    collapsed = {**healthy, "uniformity": -0.1}
    assert any("collapsed" in w for w in health.health_warnings(collapsed))
    stale = {**healthy, "z_drift": 3.2}
    assert any("stale Z" in w for w in health.health_warnings(stale))


def test_reading_rows_imports_no_torch():
    """`pirl-ablate status` and reports read the health of rows without torch (seconds to import)."""
    code = ("import sys; from pirl_ablate.health import health_warnings; import pirl_ablate.sweep.display; "
            "health_warnings({'uniformity': 0.0}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

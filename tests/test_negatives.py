"""Negative sources (memory bank, momentum queue, in-batch) against float64 transcriptions of their equations; the
queue's FIFO order and the momentum update against hand computations; resume; a tiny run with each source learns."""

from __future__ import annotations

import copy
import io
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from pirl_ablate.data.synthetic import synthetic
from pirl_ablate.errors import ConfigError
from pirl_ablate.losses import PIRLLoss, infonce_loss, nce_loss
from pirl_ablate.losses.moco import TAU as MOCO_TAU
from pirl_ablate.losses.moco import moco_v2_loss, moco_v2_negatives, moco_v2_network
from pirl_ablate.losses.negatives import (
    NEGATIVES,
    InBatchNegatives,
    MemoryBankNegatives,
    MomentumQueue,
    build_negatives,
    shared_contrast,
)
from pirl_ablate.models import PIRLNet
from pirl_ablate.models.momentum import MomentumEncoder
from pirl_ablate.transforms.image import ImageView
from pirl_ablate.transforms.jigsaw import Jigsaw
from pirl_ablate.transforms.moco_v2 import MoCoV2View
from pirl_ablate.transforms.rotation import Rotation

D, B, DIM, TAU = 20, 4, 16, 0.2  # dataset size, batch, embedding size, temperature


class TinyBackbone(nn.Module):
    """Two conv + BN layers standing in for the ResNet trunk (the `Backbone` surface PIRLNet uses)."""

    feature_dim = 32

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())

    def forward(self, x, layers):
        return {"res5": self.body(x)}


def tiny_net(seed: int = 0, num_patches: int = 9) -> PIRLNet:
    torch.manual_seed(seed)
    return PIRLNet(TinyBackbone(), embed_dim=DIM, num_patches=num_patches)


def images(seed: int, n: int = B) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def unit(seed: int, *shape: int) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return nn.functional.normalize(x, dim=-1)


def estimator(name: str, z: float | None = None, size: int = D):
    if name == "infonce":
        return partial(infonce_loss, tau=TAU)
    return partial(nce_loss, tau=TAU, log_z=math.log(z), dataset_size=size)


# ------------------------------------------------------------------------- float64 transcriptions of the equations
def nce_h(s: float, z: float, k: float) -> float:
    """Eq. 3: h = p / (p + N / |D|), p = exp(s / tau) / Z."""
    p = math.exp(s / TAU) / z
    return p / (p + k)


def transcription(q, positives, negatives_of, name, size=D):
    """Per-query losses (B, K) written out with loops in float64: InfoNCE, or NCE (Eq. 3-4) with N / |D| and
    Z = mean(exp(s / tau)) * |D| over every positive and negative score; also that Z."""
    b, k = q.shape[:2]
    exps = [math.exp(q[i, t] @ v / TAU) for i in range(b) for t in range(k) for v in [positives[i], *negatives_of(i)]]
    z = float(np.mean(exps)) * size
    out = np.zeros((b, k))
    for i in range(b):
        negs = negatives_of(i)
        for t in range(k):
            s_pos, s_neg = q[i, t] @ positives[i], [q[i, t] @ v for v in negs]
            if name == "infonce":
                e = math.exp(s_pos / TAU)
                out[i, t] = -math.log(e / (e + sum(math.exp(s / TAU) for s in s_neg)))
            else:
                ratio = len(negs) / size  # N / |D|
                out[i, t] = -math.log(nce_h(s_pos, z, ratio)) - sum(math.log(1 - nce_h(s, z, ratio)) for s in s_neg)
    return out, z


@pytest.mark.parametrize("name", ["nce", "infonce"])
def test_momentum_queue_loss_matches_float64_transcription(name):
    net = tiny_net()
    queue = MomentumQueue(size=7, momentum=0.99)
    queue.bind(D, net, torch.Generator().manual_seed(1))
    x, index = images(2), torch.arange(B)
    keys = queue.keys(net, x, index)
    with torch.no_grad():  # the key encoder starts as a copy of the network: its key is the network's embedding
        np.testing.assert_allclose(keys.positive.numpy(), net.embed_image(x).numpy(), atol=1e-6)
    q = unit(3, B, 2, DIM)
    expected, z = transcription(q.double().numpy(), keys.positive.double().numpy(),
                                lambda i: queue.queue.double().numpy(), name)
    assert queue.mean_exp(q, keys, TAU).item() * D == pytest.approx(z, rel=1e-5)
    c = queue.contrast(q, keys, estimator(name, z))
    np.testing.assert_allclose(c.loss.detach().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["nce", "infonce"])
def test_in_batch_loss_matches_float64_transcription(name):
    net = tiny_net()
    source = InBatchNegatives()
    source.bind(D, net, torch.Generator().manual_seed(1))
    keys = source.keys(net, images(2), torch.arange(B))
    k = keys.positive.detach().double().numpy()
    q = unit(3, B, 2, DIM)
    expected, z = transcription(q.double().numpy(), k, lambda i: np.delete(k, i, axis=0), name)  # the B - 1 others
    assert source.mean_exp(q, keys, TAU).item() * D == pytest.approx(z, rel=1e-5)
    c = source.contrast(q, keys, estimator(name, z))
    np.testing.assert_allclose(c.loss.detach().numpy(), expected, rtol=1e-5)
    c.loss.sum().backward()  # the keys carry the network's gradient
    assert net.image_head.weight.grad.abs().sum() > 0


def test_nce_with_shared_negatives_does_not_depend_on_the_stated_dataset_size():
    """With Z = mean(exp(s / tau)) * |D|, |D| cancels: h(s) = e^(s/tau) / (e^(s/tau) + N mean(e^(s/tau)))."""
    q, pos, neg = unit(1, B, 2, DIM), unit(2, B, DIM), unit(3, 9, DIM)
    mean = shared_contrast(q, pos, neg, estimator("infonce"), TAU).mean_exp.item()
    losses = [shared_contrast(q, pos, neg, estimator("nce", mean * size, size)).loss for size in (10, 10_000)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    s_pos, s_neg = q.double() @ pos.double().T, q.double() @ neg.double().T  # (B, 2, B), (B, 2, 9)
    e_pos = torch.exp(torch.diagonal(s_pos, dim1=0, dim2=2).T / TAU)  # (B, 2)
    h_pos = e_pos / (e_pos + 9 * mean)
    h_neg = torch.exp(s_neg / TAU) / (torch.exp(s_neg / TAU) + 9 * mean)
    expected = -torch.log(h_pos) - torch.log(1 - h_neg).sum(-1)
    np.testing.assert_allclose(losses[0].numpy(), expected.numpy(), rtol=1e-5)


# ------------------------------------------------------------------------------------- FIFO and momentum by hand
def test_queue_is_fifo_and_wraps_around():
    queue = MomentumQueue(size=5)
    queue.bind(D, tiny_net(), torch.Generator().manual_seed(1))
    start = queue.queue.clone()
    torch.testing.assert_close(start.norm(dim=1), torch.ones(5))  # random unit keys, as MoCo starts
    k1, k2, k3 = unit(1, 2, DIM), unit(2, 2, DIM), unit(3, 3, DIM)
    queue.enqueue(k1)
    assert torch.equal(queue.queue, torch.cat([k1, start[2:]])) and queue.pointer.item() == 2
    queue.enqueue(k2)
    assert torch.equal(queue.queue, torch.cat([k1, k2, start[4:]])) and queue.pointer.item() == 4
    queue.enqueue(k3)  # rows 4, 0, 1: the oldest keys (start[4], then k1) leave first
    assert torch.equal(queue.queue, torch.stack([k3[1], k3[2], k2[0], k2[1], k3[0]])) and queue.pointer.item() == 2
    with pytest.raises(ConfigError, match="MomentumQueue.size = 5 is smaller than the global batch of 6"):
        queue.enqueue(unit(4, 6, DIM))


def test_momentum_update_follows_the_ema_rule_and_copies_buffers():
    a, b1, b2 = tiny_net(0), tiny_net(1), tiny_net(2)
    for net, seed in ((b1, 5), (b2, 6)):  # give the query networks distinct BN running statistics
        net.embed_image(images(seed))
    key = MomentumEncoder(a, momentum=0.9)
    assert not any(p.requires_grad for p in key.parameters())
    key.update(b1)
    key.update(b2)
    for (name, pk), pa, p1, p2 in zip(key.net.named_parameters(), a.parameters(), b1.parameters(), b2.parameters()):
        expected = 0.81 * pa.double() + 0.09 * p1.double() + 0.1 * p2.double()  # m^2 a + m (1 - m) b1 + (1 - m) b2
        np.testing.assert_allclose(pk.double().numpy(), expected.detach().numpy(), atol=1e-6, err_msg=name)
    for bk, bq in zip(key.net.buffers(), b2.buffers()):
        assert torch.equal(bk, bq)


def test_memory_bank_with_momentum_encoder_writes_the_key_encoders_embedding():
    a, b = tiny_net(0), tiny_net(1)
    source = MemoryBankNegatives(num_negatives=5, momentum_encoder=True, encoder_momentum=0.5)
    source.bind(D, a, torch.Generator().manual_seed(1))
    before = source.memory_bank.bank.clone()
    x, index = images(2), torch.tensor([3, 7, 11, 19])
    keys = source.keys(b, x, index)  # the network has moved from a to b: theta_k = (a + b) / 2
    half = copy.deepcopy(b)
    with torch.no_grad():
        for ph, pa, pb in zip(half.parameters(), a.parameters(), b.parameters()):
            ph.copy_(((pa.double() + pb.double()) / 2).float())
        f_k = half.embed_image(x).double()
    source.update(keys, torch.zeros(B, DIM))  # f(v_I) is not what is written
    m = 0.5 * before[index].double() + 0.5 * f_k
    np.testing.assert_allclose(source.memory_bank.bank[index].numpy(), (m / m.norm(dim=1, keepdim=True)).numpy(),
                               atol=1e-5)
    assert keys.negatives.shape == (B, 5) and torch.equal(keys.positive, index)


def test_sources_are_registered_and_gin_selectable():
    import gin

    assert NEGATIVES.names() == ["in_batch", "memory_bank", "momentum_queue"]
    gin.parse_config("build_negatives.name = 'momentum_queue'\nMomentumQueue.size = 11")
    source = build_negatives()
    assert isinstance(source, MomentumQueue) and source.size == 11
    with pytest.raises(ConfigError, match="MomentumQueue.size = 11 but the dataset has only 10 images"):
        source.bind(10, tiny_net(), torch.Generator())
    gin.parse_config("build_negatives.name = 'memory_bank'\nMemoryBankNegatives.num_negatives = 3\n"
                     "MemoryBank.momentum = 0.25")  # the bank's own bindings apply, as for PIRLLoss
    source = build_negatives()
    source.bind(10, tiny_net(), torch.Generator())
    assert source.num_negatives == 3 and source.memory_bank.momentum == 0.25


# --------------------------------------------------------------------------------- training: resume and learning
SOURCES = {
    "memory_bank": lambda: MemoryBankNegatives(num_negatives=32),
    "memory_bank+momentum": lambda: MemoryBankNegatives(num_negatives=32, momentum_encoder=True,
                                                        encoder_momentum=0.9),
    "momentum_queue": lambda: MomentumQueue(size=32, momentum=0.9),
    "in_batch": InBatchNegatives,
}
SIZE, BATCH = 64, 16


def pirl_step(source, net, x, key_x, view, index, loss_fn, lam=0.5):
    """PIRL's Eq. 5 with `source` in place of the memory bank: both terms against the source's positive key."""
    f, g = net.embed_image(x), net.embed_transformed(view)
    keys = source.keys(net, key_x, index)
    c = source.contrast(torch.stack([g, f], dim=1), keys, loss_fn)
    loss = lam * c.loss[:, 0].mean() + (1 - lam) * c.loss[:, 1].mean()
    source.update(keys, f.detach())
    return loss


class Run:
    """A tiny PIRL (rotation) run on procedural images with one negative source; state is everything to resume."""

    def __init__(self, source_name: str):
        self.data = synthetic(size=SIZE, image_size=16).images.float() / 255
        self.net = tiny_net(0)
        self.source = SOURCES[source_name]()
        self.generator = torch.Generator().manual_seed(1)
        self.source.bind(SIZE, self.net, self.generator)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)
        self.augment, self.rotate = ImageView(size=16, scale=(0.5, 1.0)), Rotation()
        self.step = 0

    def train(self, steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            index = torch.randperm(SIZE, generator=self.generator)[:BATCH]
            x = self.data[index]
            view, key_view = self.augment(x, self.generator).data, self.augment(x, self.generator).data
            loss = pirl_step(self.source, self.net, view, key_view, self.rotate(x, self.generator), index,
                             estimator("infonce"))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            self.step += 1
        return losses

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "source": self.source.state_dict(), "generator": self.generator.get_state()}

    def load(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.source.load_state_dict(state["source"])
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def alignment(self) -> float:
        """Mean cosine of g(rotated I) with f(I) minus its mean with f of the other images (eval mode)."""
        self.net.eval()
        f = self.net.embed_image(self.data)
        g = self.net.embed_transformed(self.rotate(self.data, torch.Generator().manual_seed(99)))
        self.net.train()
        s = (g @ f.T).double()
        return (s.diagonal().mean() - (s.sum() - s.diagonal().sum()) / (SIZE * (SIZE - 1))).item()


def test_memory_bank_source_reproduces_todays_pirl_loss():
    net = tiny_net(0, num_patches=4)
    x, index = images(2, 6), torch.tensor([0, 5, 9, 12, 13, 19])
    view = Jigsaw(crop_size=None, grid=2, patch_size=None)(x, torch.Generator().manual_seed(3))
    today = PIRLLoss(num_negatives=8, estimator="infonce", tau=TAU)
    today.bind(D, copy.deepcopy(net), None, torch.Generator().manual_seed(4))
    start = today.memory_bank.bank.clone()
    expected = today(copy.deepcopy(net), x, view, index).total
    source = MemoryBankNegatives(num_negatives=8)
    source.bind(D, net, torch.Generator().manual_seed(4))
    assert torch.equal(source.memory_bank.bank, start)
    got = pirl_step(source, net, x, x, view, index, estimator("infonce"))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(source.memory_bank.bank, today.memory_bank.bank)


@pytest.mark.parametrize("transform", ["jigsaw", "rotation", "rotation+jigsaw"])
@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_trains_with_every_pretext_transform(name, transform):
    net = tiny_net(0, num_patches=4)
    source = SOURCES[name]()
    source.bind(SIZE, net, torch.Generator().manual_seed(1))
    parts = {"jigsaw": Jigsaw(crop_size=None, grid=2, patch_size=None), "rotation": Rotation()}
    x, key_x, index = images(2, 6), images(3, 6), torch.arange(6)
    data = x
    for part in transform.split("+"):  # rotate first, then jigsaw (paper Table 5)
        view = parts[part](data, torch.Generator().manual_seed(4))
        data = view.data
    loss = pirl_step(source, net, x, key_x, view, index, estimator("nce", z=D * 1.5))
    loss.backward()
    head = net.patch_mix if "jigsaw" in transform else net.transformed_image_head
    assert torch.isfinite(loss) and head.weight.grad.abs().sum() > 0 and net.image_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(SOURCES))
def test_resume_is_bit_identical(name):
    straight = Run(name)
    losses = straight.train(4)
    first = Run(name)
    first.train(2)
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    resumed = Run(name)
    resumed.load(torch.load(buffer, weights_only=True))
    assert resumed.train(2) == losses[2:]
    for key, value in straight.state()["source"].items():
        assert torch.equal(resumed.state()["source"][key], value), key
    for key, value in straight.state()["net"].items():
        assert torch.equal(resumed.state()["net"][key], value), key


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_tiny_run_with_each_source_learns(name):
    run = Run(name)
    before = run.alignment()
    run.train(48)
    after = run.alignment()
    assert after > before + 0.05, (before, after)  # measured: +0.09 (queue) to +0.56 (in-batch)


# ------------------------------------------------------------------------------------------------------ MoCo v2
def test_moco_v2_loss_matches_float64_transcription_and_enqueues_the_keys():
    torch.manual_seed(0)
    net = moco_v2_network(TinyBackbone(), embed_dim=DIM)
    queue = moco_v2_negatives(size=8, momentum=0.99)
    assert (queue.size, queue.momentum, MOCO_TAU) == (8, 0.99, 0.2) and isinstance(net.image_head, nn.Sequential)
    queue.bind(D, net, torch.Generator().manual_seed(1))
    before = queue.queue.double().clone()
    xq, xk = images(2), images(3)
    with torch.no_grad():  # the key encoder starts as the network: k = f(x_k)
        q, k = net.embed_image(xq).double(), net.embed_image(xk).double()
    out = moco_v2_loss(net, queue, xq, xk, torch.arange(B))
    expected = 0.0
    for b in range(B):
        logits = torch.cat([(q[b] @ k[b]).view(1), before @ q[b]]) / 0.2
        expected += (torch.logsumexp(logits, 0) - logits[0]).item() / B
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(queue.queue[:B].double().numpy(), k.numpy(), atol=1e-5)
    assert torch.equal(queue.queue[B:].double(), before[B:]) and queue.pointer.item() == B


def test_moco_v2_view_is_the_image_view_plus_jitter_probability_and_blur():
    x = synthetic(size=8, image_size=16).images.float() / 255

    def draw(transform):
        return transform(x, torch.Generator().manual_seed(5))

    plain = draw(ImageView(size=16, scale=(0.2, 1.0), hue=0.1)).data  # the same draws come first
    assert torch.equal(draw(MoCoV2View(size=16, jitter_p=1.0, blur_p=0.0)).data, plain)
    sharp = draw(MoCoV2View(size=16, jitter_p=0.0, blur_p=0.0)).data
    blurred = draw(MoCoV2View(size=16, jitter_p=0.0, blur_p=1.0, blur_sigma=(1.0, 1.0))).data
    t = np.arange(-3, 4)  # kernel 2 * ceil(3 * 1) + 1 = 7, reflected borders, separable
    w = np.exp(-t**2 / 2.0) / np.exp(-t**2 / 2.0).sum()
    padded = np.pad(sharp.double().numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect")
    rows = sum(w[i] * padded[:, :, i:i + 16, :] for i in range(7))
    expected = sum(w[i] * rows[:, :, :, i:i + 16] for i in range(7))
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-5)
    many = MoCoV2View(size=8).sample(torch.Size([4000, 3, 8, 8]), torch.Generator().manual_seed(6), x.device)
    assert many["blur"].float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert (many["brightness"] != 1).float().mean().item() == pytest.approx(0.8, abs=0.03)
    assert many["sigma"].min() >= 0.1 and many["sigma"].max() <= 2.0

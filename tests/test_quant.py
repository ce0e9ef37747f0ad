"""Tests of `zoo.quant`: numerics of every quantiser, plus parity with official-code fixtures when present."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import official_fixture

from zoo.quant import (
    FSQ,
    DualCodebookVQ,
    Quantizer,
    QuantizerOutput,
    ResidualVQ,
    VectorQuantizer,
    code_stats,
    entropy_loss,
    kmeans,
    rotation_trick,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fixtures


def _fixture(family: str, name: str) -> Path:
    return official_fixture(family, name) / name


@functools.cache
def _io(family: str) -> dict[str, torch.Tensor]:
    safetensors = pytest.importorskip("safetensors.torch")
    return safetensors.load_file(str(_fixture(family, "io.safetensors")))


@functools.cache
def _checkpoint(family: str, name: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(_fixture(family, name), map_location="cpu", weights_only=True)
    for key in ("ema", "model", "state_dict"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def _nearest64(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), codes.double()).argmin(-1)


# ----------------------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [7, 5, 4, 3], [2, 2, 2]])
def test_fsq_bijection_over_all_codes(levels):
    fsq = FSQ(levels)
    size = fsq.codebook_size
    assert size == torch.tensor(levels).prod().item() and fsq.dim == len(levels)
    ids = torch.arange(size)
    codes = fsq.lookup(ids)
    assert codes.shape == (size, len(levels)) and codes.dtype == torch.float32
    assert torch.equal(fsq.codes_to_ids(codes), ids)
    assert torch.unique(codes, dim=0).shape[0] == size
    assert codes.min() >= -1 and codes.max() <= 1
    # pre-images of every grid point go through forward to exactly that code and id
    levels_t = torch.tensor(levels, dtype=torch.float64)
    half_l = (levels_t - 1) * (1 + 1e-3) / 2
    offset = (levels_t % 2 == 0).double() * 0.5
    shift = torch.atanh(offset / half_l)
    z = torch.atanh((codes.double() * (levels_t // 2) + offset) / half_l) - shift
    out = fsq(z.float())
    assert isinstance(out, QuantizerOutput) and out.losses == {}
    assert torch.equal(out.ids, ids)
    assert torch.equal(out.quantized, codes)
    assert out.stats["usage"].item() == 1.0
    assert out.stats["perplexity"].item() == pytest.approx(size, rel=1e-4)


def test_fsq_digit_order_and_code_values():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    assert torch.equal(fsq.lookup(torch.tensor(0)), -torch.ones(6))  # id 0 = all-minimum
    assert torch.equal(fsq.lookup(torch.tensor(1)), torch.tensor([-0.75, -1, -1, -1, -1, -1]))  # first dim fastest
    assert torch.equal(fsq.lookup(torch.tensor(8)), torch.tensor([-1, -0.75, -1, -1, -1, -1]))
    assert torch.equal(fsq.lookup(torch.tensor(63999)), torch.tensor([0.75, 0.75, 0.75, 1, 1, 1]))
    assert fsq.state_dict() == {}  # implicit codebook: nothing to save


def test_fsq_forward_is_rounded_bound_with_straight_through():
    fsq = FSQ([5])
    z = torch.linspace(-4, 4, 101)[:, None].requires_grad_()
    out = fsq(z)
    bounded = fsq.bound(z.detach())
    assert torch.equal(out.quantized, torch.round(bounded) / 2)
    out.quantized.sum().backward()
    expected = torch.autograd.grad(fsq.bound(z).sum() / 2, z)[0]
    assert torch.allclose(z.grad, expected)


def test_fsq_flextok_fixture_parity():
    io = _io("flextok")
    fsq = FSQ([8, 8, 8, 5, 5, 5]).eval()
    out = fsq(io["fsq_prequant_latents"])
    assert torch.equal(out.quantized, io["fsq_quants"])
    assert torch.equal(out.ids, io["tokens"])
    assert torch.equal(fsq.lookup(io["tokens"]), io["fsq_codes_from_tokens"])
    assert torch.equal(fsq.lookup(io["fsq_example_ids"]), io["fsq_example_codes"])


# ----------------------------------------------------------------------------- VQ assignment


@pytest.mark.parametrize("form", ["taming", "encodec"])
def test_vq_picks_the_true_nearest_code(form):
    torch.manual_seed(0)
    vq = VectorQuantizer(300, 16, distance_form=form).eval()
    with torch.no_grad():
        vq.embed.normal_()
    z = torch.randn(4, 50, 16)
    out = vq(z)
    assert out.ids.shape == (4, 50) and out.ids.dtype == torch.long
    assert torch.equal(out.ids, _nearest64(z.reshape(-1, 16), vq.embed).reshape(4, 50))
    assert torch.equal(out.quantized, vq.embed[out.ids])  # forward value is exactly the code
    assert torch.equal(vq.lookup(out.ids), out.quantized)
    assert set(out.losses) == {"commitment", "codebook"}
    assert torch.allclose(out.losses["commitment"], F.mse_loss(z, vq.embed[out.ids]))


def test_vq_cosine_is_l2_normalised():
    torch.manual_seed(1)
    vq = VectorQuantizer(64, 8, metric="cosine").eval()
    with torch.no_grad():
        vq.embed.normal_().mul_(torch.rand(64, 1) * 5)  # rows of very different norms
    z = torch.randn(200, 8) * 3
    out = vq(z)
    cos = F.normalize(z, dim=-1) @ F.normalize(vq.embed, dim=-1).t()
    assert torch.equal(out.ids, cos.argmax(-1))
    assert torch.allclose(out.quantized.norm(dim=-1), torch.ones(200), atol=1e-6)
    assert torch.allclose(vq.embeddings().norm(dim=-1), torch.ones(64), atol=1e-6)
    euclid = VectorQuantizer(64, 8).eval()
    euclid.embed.data.copy_(vq.embed)
    assert not torch.equal(euclid(z).ids, out.ids)  # the metric really changes the assignment here
    expected = F.mse_loss(F.normalize(z, dim=-1), vq.embeddings()[out.ids])
    assert torch.allclose(out.losses["commitment"], expected)


def test_vq_gradients_straight_through_and_codebook_loss():
    torch.manual_seed(2)
    vq = VectorQuantizer(32, 4)
    z = torch.randn(10, 4, requires_grad=True)
    out = vq(z)
    g = torch.randn_like(z)
    (out.quantized * g).sum().backward(retain_graph=True)
    assert torch.equal(z.grad, g)  # straight-through
    assert vq.embed.grad is None  # the output does not train the codebook
    out.losses["codebook"].backward()
    assert vq.embed.grad is not None and vq.embed.grad.abs().sum() > 0


def test_vq_rejects_bad_inputs():
    vq = VectorQuantizer(16, 4)
    with pytest.raises(ValueError, match="last dim 4"):
        vq(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must have shape"):
        vq(torch.randn(2, 3, 4), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="metric"):
        VectorQuantizer(16, 4, metric="manhattan")


# ----------------------------------------------------------------------------- lookup / neighbours


def test_lookup_validates_ids_and_is_differentiable():
    vq = VectorQuantizer(16, 4)
    with pytest.raises(TypeError, match="integer ids"):
        vq.lookup(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        vq.lookup(torch.tensor([3, 16]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        vq.lookup(torch.tensor([-1]))
    codes = vq.lookup(torch.tensor([[1, 3], [3, 3]]))
    assert codes.shape == (2, 2, 4)
    codes.sum().backward()
    assert torch.equal(vq.embed.grad.abs().sum(-1) > 0, torch.isin(torch.arange(16), torch.tensor([1, 3])))
    with pytest.raises(ValueError, match="k must be"):
        vq.neighbors(torch.tensor([1]), 17)


def _brute_neighbors(space: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(space[ids].double(), space.double()).pow(2)
    d[torch.arange(len(ids)), ids] = -1
    order = torch.arange(space.shape[0]).expand_as(d)
    # lexicographic (distance, id)
    result = []
    for row, o in zip(d, order):
        pairs = sorted(zip(row.tolist(), o.tolist()))
        result.append([i for _, i in pairs[:k]])
    return torch.tensor(result)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_vq_neighbors_match_brute_force(metric):
    torch.manual_seed(3)
    vq = VectorQuantizer(200, 6, metric=metric)
    with torch.no_grad():
        vq.embed.normal_()
    ids = torch.tensor([[5, 17, 5], [199, 0, 42]])
    nb = vq.neighbors(ids, 7)
    assert nb.shape == (2, 3, 7) and nb.dtype == torch.long
    assert torch.equal(nb[..., 0], ids)
    expected = _brute_neighbors(vq.embeddings().detach(), ids.reshape(-1), 7).reshape(2, 3, 7)
    assert torch.equal(nb, expected)


def test_vq_neighbors_large_codebook_chunked():
    torch.manual_seed(4)
    vq = VectorQuantizer(65536, 8, metric="cosine")
    with torch.no_grad():
        vq.embed.normal_()
    vq.embed.data[100] = vq.embed.data[7]  # an exact duplicate: the queried id must still come first
    ids = torch.tensor([7, 100, 65535])
    nb = vq.neighbors(ids, 4)
    assert torch.equal(nb[:, 0], ids)
    assert nb[0, 1] == 100 and nb[1, 1] == 7
    space = vq.embeddings().detach()
    d = torch.cdist(space[65535:].double(), space.double())[0]
    d[65535] = -1
    assert torch.equal(nb[2], d.argsort(stable=True)[:4])


def test_fsq_neighbors_exact_and_deterministic():
    fsq = FSQ([8, 5, 3])
    ids = torch.tensor([0, 37, 119, 60])
    nb = fsq.neighbors(ids, 9)
    assert torch.equal(nb, _brute_neighbors(fsq.embeddings(), ids, 9))
    big = FSQ([8, 8, 8, 5, 5, 5])
    nb = big.neighbors(torch.tensor([[0], [12345]]), 5)
    assert nb.shape == (2, 1, 5)
    assert nb[0, 0].tolist() == [0, 1, 8, 64, 9]  # steps of 1/4 on the 8-level dims first, lower id first on ties
    assert torch.equal(nb[1, 0], _brute_neighbors(big.embeddings(), torch.tensor([12345]), 5)[0])


# ----------------------------------------------------------------------------- EMA, k-means, dead codes


def test_ema_update_equals_its_formula():
    torch.manual_seed(5)
    size, dim, decay, eps = 8, 3, 0.9, 1e-5
    vq = VectorQuantizer(size, dim, ema=True, decay=decay, eps=eps).train()
    vq.cluster_size.copy_(torch.rand(size) * 4)
    vq.embed_avg.copy_(torch.randn(size, dim))
    embed0, avg0, size0 = vq.embed.clone(), vq.embed_avg.clone(), vq.cluster_size.clone()
    z = torch.randn(40, dim)
    out = vq(z)
    assert torch.equal(out.ids, _nearest64(z, embed0))  # assigned with the codes before the update
    assert torch.equal(out.quantized, embed0[out.ids])
    assert "codebook" not in out.losses and "commitment" in out.losses
    onehot = F.one_hot(out.ids, size).double()
    cluster = decay * size0.double() + (1 - decay) * onehot.sum(0)
    avg = decay * avg0.double() + (1 - decay) * onehot.t() @ z.double()
    n = cluster.sum()
    embed = avg / ((cluster + eps) / (n + size * eps) * n)[:, None]
    assert torch.allclose(vq.cluster_size.double(), cluster, atol=1e-6)
    assert torch.allclose(vq.embed_avg.double(), avg, atol=1e-6)
    assert torch.allclose(vq.embed.double(), embed, atol=1e-5)
    vq.eval()
    before = vq.embed.clone()
    vq(z)
    assert torch.equal(vq.embed, before)  # no update in eval


def test_ema_ignores_masked_rows():
    vq = VectorQuantizer(4, 2, ema=True, decay=0.5).train()
    vq.embed.copy_(torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]]))
    vq.embed_avg.copy_(vq.embed)
    vq.cluster_size.fill_(1.0)
    z = torch.tensor([[[0.1, 0.0], [9.9, 0.2], [10.0, 10.0]]])
    mask = torch.tensor([[True, True, False]])
    out = vq(z, mask=mask)
    assert out.ids.tolist() == [[0, 1, 3]]
    assert vq.cluster_size.tolist() == [1.0, 1.0, 0.5, 0.5]  # padding (id 3) counted nowhere
    assert out.stats["usage"].item() == 0.5


def test_kmeans_is_a_lloyd_fixed_point():
    torch.manual_seed(6)
    data = torch.randn(300, 3)
    means, counts = kmeans(data, 5, num_iters=50, generator=torch.Generator().manual_seed(0))
    assert counts.sum().item() == 300
    ids = _nearest64(data, means)
    assert torch.equal(torch.bincount(ids, minlength=5).float(), counts)
    for k in range(5):
        assert torch.allclose(means[k], data[ids == k].mean(0), atol=1e-5)
    start = data[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:5]]
    inertia = lambda m: torch.cdist(data, m).min(-1).values.pow(2).sum()
    assert inertia(means) < inertia(start)


def test_kmeans_init_runs_once_in_training():
    torch.manual_seed(6)
    centers = torch.tensor([[0.0, 0.0], [20.0, 20.0]])
    data = (centers[:, None] + 0.1 * torch.randn(2, 50, 2)).reshape(-1, 2)
    vq = VectorQuantizer(2, 2, ema=True, kmeans_init=True, kmeans_iters=10)
    assert vq.inited.item() == 0 and torch.all(vq.embed == 0)
    vq.eval()(data)
    assert vq.inited.item() == 0  # never in eval
    vq.train()(data)
    assert vq.inited.item() == 1
    assert torch.cdist(centers, vq.embed).min(-1).values.max() < 0.1
    assert sorted(vq.cluster_size.tolist()) == pytest.approx([50.0, 50.0], rel=1e-4)
    first = vq.embed.clone()
    vq.train()(data + 1.0)  # a second batch moves the codes by EMA only: 1% of the shift
    assert torch.allclose(vq.embed, first + 0.01, atol=1e-4)


@pytest.mark.parametrize("ema", [True, False])
def test_dead_codes_are_revived(ema):
    torch.manual_seed(7)
    vq = VectorQuantizer(4, 2, ema=ema, decay=0.5, dead_code_threshold=1.0).train()
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    vq.embed.data.copy_(codes)
    vq.cluster_size.copy_(torch.tensor([5.0, 5.0, 5.0, 1.5]))
    if ema:
        vq.embed_avg.copy_(codes * vq.cluster_size[:, None])
    z = torch.rand(64, 2)
    out = vq(z)
    assert 3 not in out.ids  # code 3 is far away: unused, its count falls to 0.75 < 1
    revived = vq.embed[3]
    assert torch.cdist(revived[None].detach(), z).min() < 1e-3  # now a vector of the batch
    assert vq.cluster_size[3].item() == 1.0  # count reset to the threshold
    assert torch.allclose(vq.embed[:3].detach(), codes[:3], atol=0.7)  # live codes were not restarted
    later = vq.eval()(z)
    assert 3 in later.ids


# ----------------------------------------------------------------------------- rotation trick


def test_rotation_trick_forward_equals_straight_through_but_gradient_differs():
    torch.manual_seed(8)
    st = VectorQuantizer(64, 8)
    rot = VectorQuantizer(64, 8, rotation_trick=True)
    with torch.no_grad():
        st.embed.normal_()
    rot.embed.data.copy_(st.embed)
    z = torch.randn(30, 8)
    g = torch.randn(30, 8)
    z_st, z_rot = z.clone().requires_grad_(), z.clone().requires_grad_()
    out_st, out_rot = st(z_st), rot(z_rot)
    assert torch.equal(out_st.quantized, out_rot.quantized)
    assert torch.equal(out_st.ids, out_rot.ids)
    (out_st.quantized * g).sum().backward()
    (out_rot.quantized * g).sum().backward()
    assert torch.equal(z_st.grad, g)
    assert not torch.allclose(z_rot.grad, z_st.grad, atol=1e-2)
    # the rotation-trick gradient: s R^T g with R = I - 2 w w^T + 2 q^ u^T and s = |q| / |z| (eps 1e-6)
    e, q, gd = z.double(), st.embed[out_st.ids].detach().double(), g.double()
    u = e / (e.norm(dim=-1, keepdim=True) + 1e-6)
    qh = q / (q.norm(dim=-1, keepdim=True) + 1e-6)
    w = F.normalize(u + qh, dim=-1)
    scale = q.norm(dim=-1, keepdim=True) / (e.norm(dim=-1, keepdim=True) + 1e-6)
    expected = scale * (gd - 2 * w * (w * gd).sum(-1, keepdim=True) + 2 * u * (qh * gd).sum(-1, keepdim=True))
    assert torch.allclose(z_rot.grad.double(), expected, atol=1e-5)
    assert rot.embed.grad is None  # no gradient to the codes through the output


def test_rotation_trick_function_properties():
    torch.manual_seed(9)
    z = torch.randn(5, 3, requires_grad=True)
    q = torch.randn(5, 3)
    out = rotation_trick(z, q)
    assert torch.equal(out, q)
    # R maps the direction of z onto that of q, so the gradient R^T g of a g along q points along z
    grad = torch.autograd.grad(out, z, grad_outputs=F.normalize(q, dim=-1))[0]
    assert torch.allclose(F.normalize(grad, dim=-1), F.normalize(z.detach(), dim=-1), atol=1e-5)
    # antipodal vectors are handled without NaN
    anti = rotation_trick(torch.tensor([[1.0, 0.0]], requires_grad=True), torch.tensor([[-2.0, 0.0]]))
    assert torch.isfinite(anti).all()


# ----------------------------------------------------------------------------- entropy, stats, autocast


def test_entropy_loss_formula():
    torch.manual_seed(10)
    affinity = torch.randn(4, 6, 20)
    t = 0.5
    p = torch.softmax(affinity.double().reshape(-1, 20) / t, -1)
    sample = -(p * p.log()).sum(-1).mean()
    avg = p.mean(0)
    expected = sample + (avg * torch.log(avg + 1e-5)).sum()
    assert torch.allclose(entropy_loss(affinity, temperature=t).double(), expected, atol=1e-6)
    confident = torch.eye(20) * 100  # each row sure and all codes used: the minimum, about -log(20)
    minimum = -torch.log(torch.tensor(20.0)).item()
    assert entropy_loss(confident, temperature=1.0).item() == pytest.approx(minimum, abs=1e-3)
    collapsed = torch.zeros(20, 20)
    collapsed[:, 0] = 100  # all rows on one code: sample entropy 0, codebook entropy 0
    assert entropy_loss(collapsed, temperature=1.0).item() == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        entropy_loss(affinity, temperature=0.0)


def test_vq_entropy_loss_only_in_training():
    torch.manual_seed(11)
    vq = VectorQuantizer(32, 4, entropy_loss=True, entropy_temperature=0.1)
    z = torch.randn(50, 4, requires_grad=True)
    out = vq.train()(z)
    expected = entropy_loss(-torch.cdist(z.detach(), vq.embed.detach()).pow(2), temperature=0.1)
    assert torch.allclose(out.losses["entropy"], expected, atol=1e-4)
    out.losses["entropy"].backward()
    assert z.grad.abs().sum() > 0 and vq.embed.grad.abs().sum() > 0
    assert "entropy" not in vq.eval()(z).losses


def test_usage_and_perplexity():
    stats = code_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert stats["usage"].item() == 0.5 and stats["perplexity"].item() == pytest.approx(2.0)
    stats = code_stats(torch.tensor([[0, 1, 2, 3], [3, 3, 3, 3]]), 8, mask=torch.tensor([[True] * 4, [False] * 4]))
    assert stats["usage"].item() == 0.5 and stats["perplexity"].item() == pytest.approx(4.0)
    stats = code_stats(torch.tensor([5, 5, 5]), 8)
    assert stats["usage"].item() == 1 / 8 and stats["perplexity"].item() == pytest.approx(1.0)
    out = VectorQuantizer(16, 2).eval()(torch.randn(3, 7, 2))
    assert torch.equal(out.stats["usage"], code_stats(out.ids, 16)["usage"])


def test_autocast_bf16_keeps_fp32_distances():
    torch.manual_seed(12)
    vq = VectorQuantizer(512, 16).eval()
    with torch.no_grad():
        vq.embed.normal_()
    layer = torch.nn.Linear(16, 16)
    x = torch.randn(256, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16
        d = vq.distances(z)
        out = vq(z)
        fsq_out = FSQ([8, 5, 5]).eval()(z[:, :3])
    assert d.dtype == torch.float32 and out.losses["commitment"].dtype == torch.float32
    assert out.quantized.dtype == torch.bfloat16  # cast back to the input dtype
    assert torch.equal(out.ids, _nearest64(z.float(), vq.embed))
    assert torch.allclose(d, torch.cdist(z.float(), vq.embed.detach()).pow(2), atol=1e-3)
    assert torch.equal(fsq_out.ids, FSQ([8, 5, 5])(z[:, :3].float()).ids)


# ----------------------------------------------------------------------------- state dict


def test_vq_state_dict_round_trip_and_names():
    torch.manual_seed(13)
    kwargs = {"ema": True, "kmeans_init": True, "kmeans_iters": 5, "dead_code_threshold": 2.0}
    vq = VectorQuantizer(32, 4, **kwargs).train()
    vq(torch.randn(300, 4))
    state = vq.state_dict()
    assert set(state) == {"inited", "cluster_size", "embed", "embed_avg"}  # EnCodec's `_codebook.*` names
    assert dict(VectorQuantizer(32, 4).named_parameters()).keys() == {"embed"}
    fresh = VectorQuantizer(32, 4, **kwargs)
    fresh.load_state_dict(state)
    z = torch.randn(100, 4)
    assert torch.equal(fresh.eval()(z).ids, vq.eval()(z).ids)
    torch.manual_seed(0)
    a = vq.train()(z).ids
    torch.manual_seed(0)
    b = fresh.train()(z).ids  # inited travels with the state: no second k-means
    assert torch.equal(a, b) and torch.equal(vq.embed, fresh.embed)


def test_rvq_and_dual_state_dict_round_trip():
    rvq = ResidualVQ(16, 4, depth=3)
    assert set(rvq.state_dict()) == {"layers.0.embed", "layers.1.embed", "layers.2.embed"}
    shared = ResidualVQ(16, 4, depth=3, shared_codebook=True, ema=True)
    assert set(shared.state_dict()) == {"layers.0.embed", "layers.0.embed_avg", "layers.0.cluster_size"}
    dual = DualCodebookVQ(16, 3, 2)
    assert set(dual.state_dict()) == {"embed_semantic", "embed_pixel"}
    z4, z5 = torch.randn(20, 4), torch.randn(20, 5)
    for module, z, make in [
        (rvq, z4, lambda: ResidualVQ(16, 4, depth=3)),
        (dual, z5, lambda: DualCodebookVQ(16, 3, 2)),
    ]:
        fresh = make()
        fresh.load_state_dict(module.state_dict())
        assert torch.equal(fresh.eval()(z).quantized, module.eval()(z).quantized)


# ----------------------------------------------------------------------------- RVQ


@pytest.mark.parametrize("shared", [False, True])
def test_rvq_residual_assignment(shared):
    torch.manual_seed(14)
    rvq = ResidualVQ(64, 6, depth=4, shared_codebook=shared).eval()
    for layer in rvq.layers:
        with torch.no_grad():
            layer.embed.normal_()
    z = torch.randn(2, 9, 6, requires_grad=True)
    out = rvq(z)
    assert out.ids.shape == (2, 9, 4)
    assert torch.allclose(out.quantized, rvq.lookup(out.ids), atol=1e-6)
    residual = z.detach().reshape(-1, 6)
    for k in range(4):
        codes = rvq.layer(k).embed.detach()
        ids = _nearest64(residual, codes)
        assert torch.equal(out.ids.reshape(-1, 4)[:, k], ids)
        residual = residual - codes[ids]
    assert torch.allclose(z.detach() - out.quantized.detach(), residual.reshape(2, 9, 6), atol=1e-5)
    assert torch.equal(rvq(z, depth=2).ids, out.ids[..., :2])
    assert rvq.embeddings().shape == (4, 64, 6)
    assert (rvq.layer(0) is rvq.layer(3)) == shared
    g = torch.randn_like(z)
    (out.quantized * g).sum().backward()
    assert torch.equal(z.grad, g)  # one straight-through for the summed code
    nb = rvq.neighbors(out.ids, 3)
    assert nb.shape == (2, 9, 4, 3) and torch.equal(nb[..., 0], out.ids)
    assert torch.equal(rvq.lookup_per_depth(out.ids)[..., 1, :], rvq.layer(1).lookup(out.ids[..., 1]))
    assert set(out.losses) == {"commitment", "codebook"}
    assert {"usage", "perplexity", "usage_0", "perplexity_3"} <= set(out.stats)
    with pytest.raises(ValueError, match="1 <= K <= 4"):
        rvq.lookup(torch.zeros(3, 5, dtype=torch.long))


def test_rvq_shared_ema_single_update():
    torch.manual_seed(15)
    rvq = ResidualVQ(8, 2, depth=3, shared_codebook=True, ema=True, decay=0.9).train()
    z = torch.randn(10, 2)
    out = rvq(z)
    counts = torch.bincount(out.ids.reshape(-1), minlength=8).float()
    assert torch.allclose(rvq.layers[0].cluster_size, 0.1 * counts)  # one EMA step with all 3 depths' ids
    assert "codebook" not in out.losses


# ----------------------------------------------------------------------------- dual codebook


def test_dual_codebook_shared_index():
    torch.manual_seed(16)
    dual = DualCodebookVQ(100, 5, 3, semantic_weight=1.0, pixel_weight=2.0).eval()
    with torch.no_grad():
        dual.embed_semantic.normal_()
        dual.embed_pixel.normal_()
    z = torch.randn(4, 30, 8)
    out = dual(z)
    zs, zp = F.normalize(z[..., :5], dim=-1), F.normalize(z[..., 5:], dim=-1)
    es, ep = F.normalize(dual.embed_semantic.detach(), dim=-1), F.normalize(dual.embed_pixel.detach(), dim=-1)
    d = torch.cdist(zs.double(), es.double()).pow(2) + 2.0 * torch.cdist(zp.double(), ep.double()).pow(2)
    assert torch.equal(out.ids, d.argmin(-1))
    assert not torch.equal(out.ids, torch.cdist(zs, es).argmin(-1))  # the pixel half matters
    assert torch.equal(out.quantized, torch.cat([es, ep], -1)[out.ids])
    assert torch.allclose(out.quantized[..., :5].norm(dim=-1), torch.ones(4, 30), atol=1e-6)
    nb = dual.neighbors(out.ids[0, :4], 3)
    space = torch.cat([es, 2.0**0.5 * ep], -1)
    assert torch.equal(nb, _brute_neighbors(space, out.ids[0, :4], 3))


# ----------------------------------------------------------------------------- official fixtures


def test_wavtokenizer_encodec_codebook_parity():
    io = _io("wavtokenizer")
    state = _checkpoint("wavtokenizer", "wavtokenizer_fixture.ckpt")
    prefix = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
    vq = VectorQuantizer(256, 40, ema=True, kmeans_init=True, dead_code_threshold=2.0, distance_form="encodec")
    vq.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})  # strict
    vq.eval()
    for case in ("", "caseB."):
        z = io[case + "pre_quant_features"].transpose(1, 2)  # (B, D, T) -> channels-last
        out = vq(z)
        assert torch.equal(out.ids, io[case + "codes"][0])
        assert torch.equal(out.quantized.transpose(1, 2), io[case + "quantized_features"])
        assert torch.equal(vq.lookup(io[case + "codes"][0]).transpose(1, 2), io[case + "features_from_codes"])


def test_gigatok_l2_rotation_entropy_parity():
    io = _io("gigatok")
    state = _checkpoint("gigatok", "VQ_fixture256.pt")
    vq = VectorQuantizer(512, 8, metric="cosine", rotation_trick=True, entropy_loss=True, entropy_temperature=0.01)
    vq.embed.data.copy_(state["quantize.embedding.weight"])
    pre = io["pre_quant"]  # (B, C, 1, N)
    out = vq.eval()(pre.permute(0, 2, 3, 1))
    assert torch.equal(out.ids.reshape(-1), io["indices"].reshape(-1))
    quant = out.quantized.permute(0, 3, 1, 2)
    assert torch.allclose(quant, io["quant_from_code"], atol=1e-6)
    assert torch.allclose(quant, io["quant"], atol=1e-5)
    h = pre.clone().requires_grad_()
    (vq(h.permute(0, 2, 3, 1)).quantized.permute(0, 3, 1, 2) * io["rot_grad_G"]).sum().backward()
    assert torch.allclose(h.grad, io["grad_pre_quant_rot"], atol=1e-5)
    losses = vq.train()(pre.permute(0, 2, 3, 1)).losses
    assert losses["codebook"].item() == pytest.approx(io["train_vq_loss"].item(), rel=1e-5)
    assert 0.25 * losses["commitment"].item() == pytest.approx(io["train_commit_loss"].item(), rel=1e-5)
    assert 0.005 * losses["entropy"].item() == pytest.approx(io["train_entropy_loss"].item(), rel=1e-5)


def test_tokenflow_dual_codebook_parity():
    io = _io("tokenflow")
    state = _checkpoint("tokenflow", "tokenflow_fixture_clipb.pt")
    dual = DualCodebookVQ(512, 32, 8, entropy_loss=True, entropy_temperature=0.01)
    dual.embed_semantic.data.copy_(state["quantize.embedding_vqkd.weight"])
    dual.embed_pixel.data.copy_(state["quantize.embedding_vqgan.weight"])
    scales = [1, 2, 4, 6, 8, 10, 12, 14]
    offsets = [0, *itertools.accumulate(s * s for s in scales)]
    inputs, ids = io["scale_inputs"], io["ids"]
    dual.eval()
    out = dual(inputs)  # rows are independent, so all scales at once give the per-scale ids
    assert torch.equal(out.ids, ids)
    assert torch.allclose(dual.lookup(ids), io["codes_from_ids"], atol=1e-6)
    d_sem, d_pix = dual.distances(inputs[:, :5])
    assert torch.allclose(d_sem, io["d_vqkd_first2scales"], atol=2e-5)
    assert torch.allclose(d_pix, io["d_vqgan_first2scales"], atol=2e-5)
    dual.train()
    per_scale = [dual(inputs[:, a:b]) for a, b in itertools.pairwise(offsets)]

    def mean(key: str, group: str = "losses") -> float:
        return torch.stack([getattr(o, group)[key] for o in per_scale]).mean().item()

    assert mean("codebook") == pytest.approx(io["train_vq_loss"].item(), rel=1e-5)
    assert 0.25 * mean("commitment") == pytest.approx(io["train_commit_loss"].item(), rel=1e-5)
    assert 0.005 * mean("entropy") == pytest.approx(io["train_entropy_loss"].item(), rel=1e-5)
    assert mean("semantic_d_norm", "stats") == pytest.approx(io["train_vqkd_d_norm"].item(), rel=1e-5)
    assert mean("pixel_d_norm", "stats") == pytest.approx(io["train_vqgan_d_norm"].item(), rel=1e-5)
    i256 = dual.eval()(io["i256_scale_inputs"])
    assert torch.equal(i256.ids, io["i256_ids"])


def test_seed_plain_euclidean_parity():
    io = _io("seed")
    state = _checkpoint("seed", "seed_quantizer.pt")
    vq = VectorQuantizer(256, 32).eval()
    vq.embed.data.copy_(state["quantize.embedding.weight"])
    out = vq(io["z_pre_quant"])
    assert torch.equal(out.ids, io["ids"])
    assert torch.equal(out.quantized, io["codes"])
    assert torch.allclose(out.quantized, io["quant_st"], atol=1e-6)


def test_karl_l2_normalised_parity():
    io = _io("karl")
    state = _checkpoint("karl", "karl_small_vqgan_fixture.pth")
    vq = VectorQuantizer(256, 12, metric="cosine").eval()
    vq.embed.data.copy_(state["quantize.embedding.weight"])
    for key in [k for k in io if k.endswith(".pre_quant")]:
        run = key[: -len("pre_quant")]
        out = vq(io[key])
        assert torch.equal(out.ids, io[run + "latent_ids"]), run
        if run + "latent_quantized" in io:
            assert torch.allclose(out.quantized, io[run + "latent_quantized"], atol=1e-6)


def test_every_quantizer_is_a_quantizer():
    for q in [VectorQuantizer(8, 2), FSQ([3, 3]), ResidualVQ(8, 2, 2), DualCodebookVQ(8, 1, 1)]:
        assert isinstance(q, Quantizer)
        assert q.embeddings().shape[-2:] == (q.codebook_size, q.dim)


# -- assign: the one side-effect-free way from latents to ids -------------------------------------------------------
def _quantizers():
    torch.manual_seed(0)
    return {
        "vq-euclidean": VectorQuantizer(64, 8),
        "vq-cosine": VectorQuantizer(64, 8, metric="cosine", rotation_trick=True, entropy_loss=True),
        "vq-ema-kmeans-restart": VectorQuantizer(64, 8, ema=True, kmeans_init=True, dead_code_threshold=5.0),
        "fsq": FSQ([8, 5, 5], drop_quant_p=1.0),
        "rvq": ResidualVQ(64, 8, 3, ema=True, dead_code_threshold=5.0),
        "dual": DualCodebookVQ(64, 6, 2, pixel_weight=0.5, entropy_loss=True),
    }


@pytest.mark.parametrize("kind", list(_quantizers()))
def test_assign_equals_forward_ids_and_changes_nothing_in_train_mode(kind):
    q = _quantizers()[kind].train()
    z = torch.randn(4, 10, q.dim)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    ids = q.assign(z)
    assert ids.dtype == torch.long
    assert ids.shape == ((4, 10, 3) if kind == "rvq" else (4, 10))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items()), "assign changed the quantiser state"
    assert not ids.requires_grad
    q.eval()
    with torch.no_grad():
        assert torch.equal(q(z).ids, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q.assign(z.bfloat16().float()), q.assign(z.bfloat16().float()))

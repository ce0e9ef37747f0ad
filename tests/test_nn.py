"""Shared blocks in `zoo.nn` against naive re-statements of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import official_fixture

from zoo.nn import (
    DIT_CHUNK_ORDER,
    AdaLNHead,
    AdaLNZeroBlock,
    AdaptiveGroupNorm,
    Attention,
    AttnBlock,
    Block,
    ChannelLayerNorm,
    ConvNeXtBlock,
    CrossAttentionBlock,
    DepthToSpaceUpsample,
    Downsample,
    Fp32LayerNorm,
    GatedMlp,
    Mlp,
    ResnetBlock,
    RMSNorm,
    TimestepEmbedder,
    Transformer,
    Upsample,
    apply_rotary,
    depth_to_space,
    gated_hidden_dim,
    lengths_to_padding_mask,
    rotary_1d,
    rotary_2d,
    sincos_1d,
    sincos_2d,
    space_to_depth,
    timestep_embedding,
)

FLEXTOK_CHUNK_ORDER = ("gate_msa", "gate_mlp", "shift_msa", "scale_msa", "shift_mlp", "scale_mlp")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def naive_attention(attn: Attention, x, context=None, value=None, allowed=None, bias=None):
    """Softmax attention written out with explicit weights, from the module's parameters."""
    k_in = x if context is None else context
    v_in = k_in if value is None else value
    if attn.fused_qkv:
        wq, wk, wv = attn.qkv.weight.chunk(3)
        if attn.q_bias is not None:
            bq, bk, bv = attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias
        elif attn.qkv.bias is not None:
            bq, bk, bv = attn.qkv.bias.chunk(3)
        else:
            bq = bk = bv = None
        q, k, v = F.linear(x, wq, bq), F.linear(k_in, wk, bk), F.linear(v_in, wv, bv)
    else:
        q, k, v = attn.q(x), attn.k(k_in), attn.v(v_in)
    h, d = attn.num_heads, attn.head_dim

    def split(t):
        return t.view(t.shape[0], t.shape[1], h, d).transpose(1, 2)

    q, k, v = attn.q_norm(split(q)), attn.k_norm(split(k)), split(v)
    logits = (q @ k.transpose(-1, -2)) * attn.scale
    if bias is not None:
        logits = logits + bias
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    w = logits.softmax(-1)
    out = (w @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], h * d)
    return attn.proj(out)


def _attn(**kw) -> Attention:
    a = Attention(32, num_heads=4, **kw).eval()
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0, 0.3)
    return a


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"qkv_bias": True},
        {"qkv_bias": "qv"},
        {"fused_qkv": False, "qkv_bias": True},
        {"qk_norm": "layernorm"},
        {"qk_norm": "layernorm", "qk_norm_affine": False, "qk_norm_eps": 1e-5},
        {"qk_norm": "rmsnorm"},
        {"scale": 8 / 8},
        {"head_dim": 16, "proj_bias": False},
    ],
)
def test_attention_matches_naive_unmasked(kw):
    a = _attn(**kw)
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(a(x), naive_attention(a, x), atol=1e-5, rtol=1e-5)


def test_attention_custom_scale_changes_output():
    a = _attn(head_dim=16)
    x = torch.randn(2, 7, 32)
    b = _attn(head_dim=16, scale=8 / 16)
    b.load_state_dict(a.state_dict())
    assert b.scale == 0.5 and a.scale == 0.25
    torch.testing.assert_close(b(x), naive_attention(b, x), atol=1e-5, rtol=1e-5)
    assert (a(x) - b(x)).abs().max() > 1e-3


def test_attention_mask_types_match_naive():
    a = _attn(qk_norm="layernorm")
    b, n = 2, 6
    x = torch.randn(b, n, 32)
    mask2 = torch.rand(n, n) > 0.4
    mask2 |= torch.eye(n, dtype=torch.bool)
    mask3 = torch.rand(b, n, n) > 0.4
    mask3 |= torch.eye(n, dtype=torch.bool)
    tri = torch.ones(n, n, dtype=torch.bool).tril()
    pad = torch.tensor([[False] * n, [False] * 4 + [True] * 2])
    fbias = torch.randn(b, n, n)
    cases = [
        ({"attn_mask": mask2}, mask2[None, None], None),
        ({"attn_mask": mask3}, mask3[:, None], None),
        ({"is_causal": True}, tri[None, None], None),
        ({"key_padding_mask": pad}, ~pad[:, None, None, :], None),
        ({"key_padding_mask": pad, "is_causal": True}, (~pad[:, None, None, :]) & tri, None),
        ({"attn_mask": mask3, "key_padding_mask": pad}, mask3[:, None] & ~pad[:, None, None, :], None),
        ({"attn_mask": fbias}, None, fbias[:, None]),
    ]
    for kwargs, allowed, bias in cases:
        label = sorted(kwargs)
        torch.testing.assert_close(a(x, **kwargs), naive_attention(a, x, allowed=allowed, bias=bias), atol=1e-5,
                                   rtol=1e-5, msg=lambda m, label=label: f"{label}: {m}")


def test_padding_content_does_not_change_valid_outputs():
    a = _attn(qk_norm="rmsnorm")
    lengths = torch.tensor([5, 3])
    x = torch.randn(2, 5, 32)
    pad = lengths_to_padding_mask(lengths, 5)
    assert pad.tolist() == [[False] * 5, [False] * 3 + [True] * 2]
    y1 = a(x, key_padding_mask=pad)
    x2 = x.clone()
    x2[1, 3:] = 100 * torch.randn(2, 32)
    y2 = a(x2, key_padding_mask=pad)
    torch.testing.assert_close(y1[0], y2[0])
    torch.testing.assert_close(y1[1, :3], y2[1, :3])
    # the same as running the short sequence alone
    torch.testing.assert_close(y1[1:, :3], a(x[1:, :3]), atol=1e-5, rtol=1e-5)


def test_causal_future_does_not_leak():
    a = _attn()
    x = torch.randn(1, 8, 32)
    x2 = x.clone()
    x2[:, 5:] += torch.randn(1, 3, 32)
    y1, y2 = a(x, is_causal=True), a(x2, is_causal=True)
    torch.testing.assert_close(y1[:, :5], y2[:, :5])
    assert (y1[:, 5:] - y2[:, 5:]).abs().max() > 1e-3


def test_fully_masked_query_rows_give_zeros_not_nan():
    a = _attn()
    x = torch.randn(1, 4, 32)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    y = a(x, attn_mask=mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[0, 2], a.proj.bias)
    torch.testing.assert_close(y[0, [0, 1, 3]], a(x)[0, [0, 1, 3]])


def test_cross_attention_and_separate_value():
    a = Attention(32, num_heads=4, kv_dim=24, fused_qkv=False, qkv_bias=True)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 9, 24)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[0, 6:] = True
    torch.testing.assert_close(a(x, ctx, key_padding_mask=pad),
                               naive_attention(a, x, ctx, allowed=~pad[:, None, None]), atol=1e-5, rtol=1e-5)
    f = _attn(qkv_bias=True)
    mem, pos = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    torch.testing.assert_close(f(x, mem + pos, mem), naive_attention(f, x, mem + pos, mem), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="fused_qkv"):
        Attention(32, num_heads=4, kv_dim=24)


def test_attention_bad_arguments_raise():
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, num_heads=4)
    with pytest.raises(ValueError, match="qk_norm"):
        Attention(32, num_heads=4, qk_norm="batchnorm")
    a = _attn()
    with pytest.raises(ValueError, match="attn_mask"):
        a(torch.randn(1, 4, 32), attn_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask"):
        a(torch.randn(1, 4, 32), key_padding_mask=torch.ones(1, 4))


def test_rotary_relative_and_hook():
    cos, sin = rotary_1d(10, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    # the q.k product after rotation depends only on the position offset
    def dot(i, j):
        return (apply_rotary(q, cos[i:i + 1], sin[i:i + 1]) * apply_rotary(k, cos[j:j + 1], sin[j:j + 1])).sum()
    torch.testing.assert_close(dot(2, 5), dot(4, 7), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(q, cos[:1], sin[:1]), q)  # position 0 is the identity
    cos2, _sin2 = rotary_2d(3, 4, 16)
    assert cos2.shape == (12, 16)
    torch.testing.assert_close(cos2[5, :8], rotary_1d(torch.tensor([1]), 8)[0][0])  # row 1
    torch.testing.assert_close(cos2[5, 8:], rotary_1d(torch.tensor([1]), 8)[0][0])  # col 1
    a = _attn()
    x = torch.randn(2, 10, 32)
    cos8, sin8 = rotary_1d(10, 8)
    calls = []

    def hook(qq, kk):
        calls.append(qq.shape)
        return apply_rotary(qq, cos8, sin8), apply_rotary(kk, cos8, sin8)

    torch.testing.assert_close(a(x, rope=hook), a(x, rope=(cos8, sin8)))
    assert calls == [torch.Size([2, 4, 10, 8])]
    assert (a(x, rope=(cos8, sin8)) - a(x)).abs().max() > 1e-4


def test_mlp_and_gated_hidden_size():
    assert gated_hidden_dim(32, 4.0) == 85 and gated_hidden_dim(48, 4.0) == 128  # FlexTok fixture widths
    assert gated_hidden_dim(32, 4.0, multiple_of=8) == 88
    g = GatedMlp(32, mlp_ratio=4.0)
    assert g.fc1.weight.shape == (85, 32) and g.fc3.weight.shape == (85, 32) and g.fc2.weight.shape == (32, 85)
    assert g.fc1.bias is None
    x = torch.randn(3, 32)
    torch.testing.assert_close(g(x), g.fc2(F.silu(g.fc1(x)) * g.fc3(x)))
    assert GatedMlp(32, mlp_ratio=4.0, swiglu_hidden=False).fc1.out_features == 128
    m = Mlp(32, mlp_ratio=2.0, act="quick_gelu")
    h = m.fc1(x)
    torch.testing.assert_close(m(x), m.fc2(h * torch.sigmoid(1.702 * h)))
    with pytest.raises(ValueError, match="activation"):
        Mlp(4, act="swish2")


def test_norms():
    x = torch.randn(2, 5, 16) * 3 + 1
    ln = Fp32LayerNorm(16, eps=1e-5, elementwise_affine=False)
    assert len(list(ln.parameters())) == 0
    torch.testing.assert_close(ln(x.bfloat16()).float(), F.layer_norm(x.bfloat16().float(), (16,), eps=1e-5),
                               atol=1e-2, rtol=1e-2)
    assert ln(x.bfloat16()).dtype == torch.bfloat16
    r = RMSNorm(16, eps=1e-6)
    torch.testing.assert_close(r(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    c = ChannelLayerNorm(16)
    xc = torch.randn(2, 16, 3, 4)
    torch.testing.assert_close(c(xc), F.layer_norm(xc.permute(0, 2, 3, 1), (16,), c.weight, c.bias).permute(0, 3, 1, 2))


def test_adaptive_group_norm_formula():
    n = AdaptiveGroupNorm(64, 8, num_groups=32)
    x, style = torch.randn(2, 64, 4, 4), torch.randn(2, 8, 3, 3)
    flat = style.flatten(2)
    std = torch.sqrt(flat.var(-1, unbiased=True) + 1e-6)
    ref = n.gamma(std)[..., None, None] * F.group_norm(x, 32, eps=1e-6) + n.beta(flat.mean(-1))[..., None, None]
    torch.testing.assert_close(n(x, style), ref)


def test_sincos_formulas():
    t = sincos_1d(5, 8)
    p, k = 3, 2
    assert math.isclose(t[p, k].item(), math.sin(p / 10000 ** (k / 4)), rel_tol=1e-5)
    assert math.isclose(t[p, 4 + k].item(), math.cos(p / 10000 ** (k / 4)), rel_tol=1e-5)
    # FlexTok's build_2d_sincos_posemb (README): meshgrid(arange(W), arange(H), "ij"), omega over D/4,
    # cat[sin(gw w), cos(gw w), sin(gh w), cos(gh w)], then read as (h w)
    h = w = 4
    d = 32
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))
    ow, oh = gw.flatten()[:, None] * omega, gh.flatten()[:, None] * omega
    ref = torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], dim=1).float()
    torch.testing.assert_close(sincos_2d(h, w, d, first_axis="row"), ref)
    mae = sincos_2d(2, 3, 8)  # columns first
    torch.testing.assert_close(mae[4, :4], sincos_1d(torch.tensor([1]), 4)[0])  # index 4 = row 1, col 1
    torch.testing.assert_close(mae[2, :4], sincos_1d(torch.tensor([2]), 4)[0])  # col 2
    torch.testing.assert_close(mae[2, 4:], sincos_1d(torch.tensor([0]), 4)[0])  # row 0


def test_timestep_embedding_formulas():
    t = torch.tensor([0.0, 0.6, 1.0])
    # FlexTok: freqs = 1000 * exp(-ln(256) * arange(128) / 128), cat[cos, sin]
    freqs = 1000 * torch.exp(-math.log(256) * torch.arange(128) / 128)
    ref = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    torch.testing.assert_close(timestep_embedding(t, 256, max_period=256, freq_scale=1000), ref)
    torch.testing.assert_close(timestep_embedding(t, 256, max_period=256, time_scale=1000), ref, atol=1e-4, rtol=0)
    # diffusers get_timestep_embedding(flip_sin_to_cos=False, downscale_freq_shift=1)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / (4 - 1))
    ref = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1)
    torch.testing.assert_close(timestep_embedding(t, 8, order="sin_cos", downscale_freq_shift=1), ref)
    assert timestep_embedding(t, 7).shape == (3, 7)
    emb = TimestepEmbedder(16, freq_dim=8)
    assert [k for k, _ in emb.named_parameters()] == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


def _randomise(module: torch.nn.Module, std: float = 0.2) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


@pytest.mark.parametrize("order", [DIT_CHUNK_ORDER, FLEXTOK_CHUNK_ORDER])
def test_adaln_zero_block_chunk_order(order):
    blk = AdaLNZeroBlock(16, num_heads=2, chunk_order=order, mlp="swiglu", mlp_bias=False,
                         attention_kwargs={"qk_norm": "layernorm", "qk_norm_affine": False})
    _randomise(blk)
    x, cond = torch.randn(2, 5, 16), torch.randn(2, 16)
    m = blk.adaLN_modulation[1](F.silu(cond)).chunk(6, dim=-1)
    c = {name: m[i][:, None] for i, name in enumerate(order)}
    h = F.layer_norm(x, (16,), eps=1e-6) * (1 + c["scale_msa"]) + c["shift_msa"]
    ref = x + c["gate_msa"] * blk.attn(h)
    h = F.layer_norm(ref, (16,), eps=1e-6) * (1 + c["scale_mlp"]) + c["shift_mlp"]
    ref = ref + c["gate_mlp"] * blk.mlp(h)
    torch.testing.assert_close(blk(x, cond), ref, atol=1e-5, rtol=1e-5)
    assert "adaLN_modulation.1.weight" in blk.state_dict()


def test_adaln_order_matters_and_zero_init_is_identity():
    blk = AdaLNZeroBlock(16, num_heads=2)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(blk(x, torch.randn(2, 16)), x)  # AdaLN-zero starts as the identity
    a = AdaLNZeroBlock(16, num_heads=2, chunk_order=DIT_CHUNK_ORDER)
    _randomise(a)
    b = AdaLNZeroBlock(16, num_heads=2, chunk_order=FLEXTOK_CHUNK_ORDER)
    b.load_state_dict(a.state_dict())
    cond = torch.randn(2, 16)
    assert (a(x, cond) - b(x, cond)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="permutation"):
        AdaLNZeroBlock(16, num_heads=2, chunk_order=("shift_msa",) * 6)


def test_adaln_groups_select_per_token_modulation():
    blk = AdaLNZeroBlock(16, num_heads=2, num_cond_groups=2, chunk_order=FLEXTOK_CHUNK_ORDER)
    _randomise(blk)
    assert blk.adaLN_modulation[1].weight.shape == (2 * 6 * 16, 16)
    x, cond = torch.randn(2, 6, 16), torch.randn(2, 16)
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    mods = blk.adaLN_modulation(cond, groups)
    full = blk.adaLN_modulation[1](F.silu(cond)).view(2, 2, 6, 16)
    torch.testing.assert_close(mods["gate_msa"][:, 0], full[:, 0, 0])
    torch.testing.assert_close(mods["scale_mlp"][:, 5], full[:, 1, 5])
    torch.testing.assert_close(blk(x, cond, group_ids=groups), blk(x, cond[:, None].expand(-1, 6, -1),
                                                                      group_ids=groups[None].expand(2, -1)))
    with pytest.raises(ValueError, match="group_ids"):
        blk(x, cond)


def test_adaln_head():
    head = AdaLNHead(16, 12)
    _randomise(head)
    x, cond = torch.randn(2, 5, 16), torch.randn(2, 16)
    shift, scale = head.adaLN_modulation[1](F.silu(cond)).chunk(2, -1)
    ref = head.proj(F.layer_norm(x, (16,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None])
    torch.testing.assert_close(head(x, cond), ref)
    assert sorted(head.state_dict()) == ["adaLN_modulation.1.bias", "adaLN_modulation.1.weight", "proj.bias",
                                         "proj.weight"]


def test_block_pre_and_post_norm_and_stack():
    blk = Block(32, num_heads=4, qkv_bias=True, layerscale=0.5)
    _randomise(blk)
    x = torch.randn(2, 5, 32)
    h = x + 0.0
    ref = x + blk.ls1.gamma * blk.attn(blk.norm1(x))
    ref = ref + blk.ls2.gamma * blk.mlp(blk.norm2(ref))
    torch.testing.assert_close(blk(h), ref)
    post = Block(32, num_heads=4, norm_first=False, norm_eps=1e-12)
    y = post.norm1(x + post.attn(x))
    torch.testing.assert_close(post(x), post.norm2(y + post.mlp(y)))
    assert {"norm1.weight", "attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight",
            "ls1.gamma"} <= set(blk.state_dict())
    stack = Transformer(32, depth=3, num_heads=4, final_norm=True, drop_path=0.2)
    out, feats = stack(x, return_layers=[1, 3], is_causal=True)
    assert len(feats) == 2 and out.shape == x.shape
    manual = stack.blocks[0](x, is_causal=True)
    torch.testing.assert_close(feats[0], manual)
    with pytest.raises(ValueError, match="return_layers"):
        stack(x, return_layers=[4])
    stack.train()
    out = stack(x).sum()
    out.backward()
    assert all(p.grad is not None for p in stack.parameters())


def test_block_pos_goes_to_query_and_key_only():
    blk = Block(32, num_heads=4)
    _randomise(blk)
    x, pos = torch.randn(2, 5, 32), torch.randn(1, 5, 32)
    h = blk.norm1(x)
    ref = x + blk.attn(h + pos, value=h)
    ref = ref + blk.mlp(blk.norm2(ref))
    torch.testing.assert_close(blk(x, pos=pos), ref)
    torch.testing.assert_close(naive_attention(blk.attn, h + pos, value=h), blk.attn(h + pos, value=h),
                               atol=1e-5, rtol=1e-5)


def test_cross_attention_block():
    blk = CrossAttentionBlock(32, num_heads=4, context_dim=24, qkv_bias=True)
    _randomise(blk)
    x, mem, mpos = torch.randn(2, 5, 32), torch.randn(2, 7, 24), torch.randn(2, 7, 24)
    ref = x + blk.attn(blk.norm1(x))
    ref = ref + blk.cross_attn(blk.norm2(ref), mem + mpos, mem)
    ref = ref + blk.mlp(blk.norm3(ref))
    torch.testing.assert_close(blk(x, mem, context_pos=mpos), ref)
    assert blk.cross_attn.fused_qkv is False and blk.attn.fused_qkv is True
    only_cross = CrossAttentionBlock(32, num_heads=4, self_attn=False)
    assert only_cross.attn is None and only_cross(x, torch.randn(2, 7, 32)).shape == x.shape


def test_channels_last_group_norm_is_about_as_accurate_as_channels_first():
    from zoo.nn.norms import group_norm_channels_last

    g = torch.Generator().manual_seed(0)
    # a map with large channel means (where one-pass fp32 statistics fail) and a per-sample affine
    x = torch.randn(2, 64, 96, 80, generator=g) * 0.5 + torch.randn(1, 64, 1, 1, generator=g) * 4
    weight, bias = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g)
    exact = F.group_norm(x.double(), 16, eps=1e-6) * weight.double()[..., None, None] + bias.double()[..., None, None]
    channels_first = F.group_norm(x, 16, eps=1e-6) * weight[..., None, None] + bias[..., None, None]
    y = group_norm_channels_last(x.contiguous(memory_format=torch.channels_last), 16, weight, bias, eps=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last)
    ours, theirs = (y.double() - exact).abs().max().item(), (channels_first.double() - exact).abs().max().item()
    # same order as the channels-first kernel (measured 0.8-1.8e-6 vs 0.8e-6, by thread count); PyTorch's own
    # channels-last kernel is ~50x worse on such maps
    assert ours <= 4 * theirs + 1e-7 and ours < 5e-6, (ours, theirs)
    n = AdaptiveGroupNorm(64, 8, num_groups=16)
    style = torch.randn(2, 8, 3, 3, generator=g)
    torch.testing.assert_close(n(x.contiguous(memory_format=torch.channels_last), style), n(x, style),
                               atol=2e-5, rtol=0)
    # with autograd the statistics kernel has no gradient: the norm falls back to PyTorch's, the function refuses
    leaf = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    n(leaf, style).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    with pytest.raises(RuntimeError, match="no gradient"):
        group_norm_channels_last(leaf, 16)


def test_depth_to_space_orders():
    c, r = 3, 2
    x = torch.randn(2, c * r * r, 4, 5)
    dcr = depth_to_space(x, r, "dcr")
    for i in range(r):
        for j in range(r):
            torch.testing.assert_close(dcr[:, :, i::r, j::r], x[:, (r * i + j) * c:(r * i + j + 1) * c])
    crd = depth_to_space(x, r, "crd")
    torch.testing.assert_close(crd[:, 1, 0::r, 1::r], x[:, 1 * r * r + 1])
    torch.testing.assert_close(space_to_depth(dcr, r, "dcr"), x)
    torch.testing.assert_close(space_to_depth(crd, r, "crd"), x)
    cl = depth_to_space(x.contiguous(memory_format=torch.channels_last), r, "dcr")
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, dcr, atol=0, rtol=0)
    up = DepthToSpaceUpsample(8, 4)
    assert up.conv1.weight.shape == (16, 8, 3, 3) and up(torch.randn(1, 8, 3, 3)).shape == (1, 4, 6, 6)


def test_conv_blocks():
    blk = ResnetBlock(32, 64, num_groups=32)
    x = torch.randn(2, 32, 8, 8)
    h = blk.conv1(F.silu(F.group_norm(x, 32, blk.norm1.weight, blk.norm1.bias, 1e-6)))
    h = blk.conv2(F.silu(F.group_norm(h, 32, blk.norm2.weight, blk.norm2.bias, 1e-6)))
    torch.testing.assert_close(blk(x), blk.nin_shortcut(x) + h)
    assert "nin_shortcut.weight" in blk.state_dict() and "nin_shortcut.weight" not in ResnetBlock(32).state_dict()
    assert ResnetBlock(32, dims=1, temb_channels=8)(torch.randn(2, 32, 10), torch.randn(2, 8)).shape == (2, 32, 10)
    down = Downsample(32)
    torch.testing.assert_close(down(x), down.conv(F.pad(x, (0, 1, 0, 1))))
    assert down(x).shape == (2, 32, 4, 4) and Downsample(32, with_conv=False)(x).shape == (2, 32, 4, 4)
    assert Upsample(32, 16)(x).shape == (2, 16, 16, 16)
    attn = AttnBlock(32, dims=1)
    _randomise(attn)
    xs = torch.randn(2, 32, 6)
    hn = attn.norm(xs)
    q, k, v = attn.q(hn), attn.k(hn), attn.v(hn)
    w = torch.softmax(q.transpose(1, 2) @ k * 32**-0.5, dim=-1)
    torch.testing.assert_close(attn(xs), xs + attn.proj_out((w @ v.transpose(1, 2)).transpose(1, 2)),
                               atol=1e-5, rtol=1e-5)


def test_convnext_block_with_adaptive_norm():
    blk = ConvNeXtBlock(16, 48, num_cond=4, layerscale=0.5)
    _randomise(blk)
    x = torch.randn(2, 16, 9)
    cid = torch.tensor([0, 3])
    h = blk.dwconv(x).transpose(1, 2)
    h = F.layer_norm(h, (16,), eps=1e-6) * blk.norm.scale(cid)[:, None] + blk.norm.shift(cid)[:, None]
    ref = x + (blk.gamma * blk.pwconv2(F.gelu(blk.pwconv1(h)))).transpose(1, 2)
    torch.testing.assert_close(blk(x, cid), ref)
    with pytest.raises(ValueError, match="cond_id"):
        blk(x)
    with pytest.raises(ValueError, match="cond_id"):
        blk(x, torch.tensor([0, 4]))


def test_flextok_fixture_posemb_and_timestep_embedder():
    root = official_fixture("flextok", "model.safetensors", "io.safetensors")
    from safetensors.torch import load_file

    sd = load_file(str(root / "model.safetensors"))
    io = load_file(str(root / "io.safetensors"))
    table = sd["encoder.module_dict.enc_posemb_module.posembs"]  # [1, D, H, W]
    d, h, w = table.shape[1:]
    ours = sincos_2d(h, w, d, first_axis="row").T.reshape(1, d, h, w)
    torch.testing.assert_close(ours, table, atol=1e-6, rtol=0)
    prefix = "decoder.module_dict.dec_time_embedder.mlp."
    dim = sd[prefix + "0.weight"].shape[0]
    emb = TimestepEmbedder(dim, freq_dim=256, max_period=256, freq_scale=1000)
    emb.load_state_dict({k[len("decoder.module_dict.dec_time_embedder."):]: v for k, v in sd.items()
                         if k.startswith(prefix)})
    torch.testing.assert_close(emb(io["single_timesteps"]), io["single_dec_temb"], atol=1e-5, rtol=1e-5)


def test_per_item_on_cpu_runs_items_one_at_a_time_only_for_cpu_inference():
    from zoo.nn import per_item_on_cpu

    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU())
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return conv(x)

    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        y = per_item_on_cpu(fn, x)
        assert calls == [1] * 5
        torch.testing.assert_close(y, conv(x))  # the batched call, up to float rounding
        assert torch.equal(y[2:3], conv(x[2:3]))  # single-item calls exactly
    calls.clear()
    y = per_item_on_cpu(fn, x)  # autograd on (training): the batch runs whole
    assert calls == [5] and y.requires_grad

"""zoo.losses: GAN loss formulas, discriminators, spectral losses, LPIPS parity with the lpips package, semantic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.losses import (
    LPIPS,
    DACDiscriminator,
    MelSpectrogramLoss,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    PatchGAN,
    SemanticAlignmentLoss,
    Teacher,
    adaptive_weight,
    build_teacher,
    discriminator_loss,
    feature_matching_loss,
    find_backbone_weights,
    generator_loss,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


# ------------------------------------------------------------------------------------------------- GAN losses
REAL = torch.tensor([[1.5, 0.2], [-0.7, 3.0]])
FAKE = torch.tensor([[-2.0, 0.4], [0.9, -0.1]])


def _mean(values):
    return sum(values) / len(values)


def test_discriminator_loss_formulas():
    r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
    sp = lambda v: float(torch.log1p(torch.exp(torch.tensor(v))))
    expected = {
        "hinge": _mean([max(0, 1 - v) for v in r]) + _mean([max(0, 1 + v) for v in f]),
        "non_saturating": _mean([sp(-v) for v in r]) + _mean([sp(v) for v in f]),
        "lsgan": _mean([(1 - v) ** 2 for v in r]) + _mean([v ** 2 for v in f]),
    }
    expected["hinge_clamped"] = expected["hinge"]
    for kind, value in expected.items():
        assert float(discriminator_loss(REAL, FAKE, kind)) == pytest.approx(value, rel=1e-6), kind
    assert float(discriminator_loss(REAL, FAKE, "vanilla")) == pytest.approx(expected["non_saturating"], rel=1e-6)


def test_generator_loss_formulas():
    f = FAKE.flatten().tolist()
    sp = lambda v: float(torch.log1p(torch.exp(torch.tensor(v))))
    expected = {
        "hinge": -_mean(f),
        "hinge_clamped": _mean([max(0, 1 - v) for v in f]),
        "non_saturating": _mean([sp(-v) for v in f]),
        "lsgan": _mean([(1 - v) ** 2 for v in f]),
    }
    for kind, value in expected.items():
        assert float(generator_loss(FAKE, kind)) == pytest.approx(value, rel=1e-6), kind


def test_loss_lists_are_averaged_and_kinds_checked():
    a, b = discriminator_loss(REAL, FAKE), discriminator_loss(REAL * 2, FAKE - 1)
    assert float(discriminator_loss([REAL, REAL * 2], [FAKE, FAKE - 1])) == pytest.approx(float(a + b) / 2)
    assert float(generator_loss([FAKE, FAKE * 3], "lsgan")) == pytest.approx(
        float(generator_loss(FAKE, "lsgan") + generator_loss(FAKE * 3, "lsgan")) / 2)
    with pytest.raises(ValueError, match="hinge"):
        generator_loss(FAKE, "wasserstein")
    with pytest.raises(ValueError, match="as many"):
        discriminator_loss([REAL], [FAKE, FAKE])


def test_feature_matching():
    real = [[torch.ones(2, 3), torch.zeros(4)], [torch.full((5,), 2.0)]]
    fake = [[torch.zeros(2, 3), torch.ones(4)], [torch.full((5,), 2.5, requires_grad=True)]]
    loss = feature_matching_loss(real, fake)
    assert float(loss.detach()) == pytest.approx(((1 + 1) + 0.5) / 2)
    loss.backward()
    assert fake[1][0].grad is not None
    assert float(feature_matching_loss(real, real)) == 0.0


def test_adaptive_weight_ratio():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec, gan = (3 * w).sum(), (0.5 * w).sum()
    assert float(adaptive_weight(rec, gan, w)) == pytest.approx(3 / 0.5, rel=1e-3)


def test_patchgan_shapes_and_taming_names():
    d = PatchGAN(channels=8, num_layers=3)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    logits = d(x)
    assert logits.shape == (2, 1, 6, 6)
    discriminator_loss(d(x.detach()), logits).backward()
    assert x.grad is not None and all(p.grad is not None for p in d.parameters())
    names = set(d.state_dict())
    assert {"main.0.weight", "main.2.weight", "main.3.running_mean", "main.11.weight"} <= names
    assert PatchGAN(channels=8, num_layers=2, norm="group")(torch.rand(1, 3, 32, 32)).shape == (1, 1, 6, 6)


# ------------------------------------------------------------------------------------------------- audio discs
@torch.no_grad()
def test_mpd_mrd_shapes_and_conditioning():
    y, y_hat = torch.randn(1, 1, 1024) * 0.1, torch.randn(1, 1024) * 0.1
    mpd = MultiPeriodDiscriminator(num_embeddings=4)
    assert sum(p.numel() for p in mpd.parameters()) / 1e6 == pytest.approx(41.13, abs=0.01)  # WavTokenizer's MPD
    lr, lf, fr, ff = mpd(y, y_hat)
    assert len(lr) == len(lf) == 5 and [len(f) for f in fr] == [5] * 5
    for p, logits in zip((2, 3, 5, 7, 11), lr):
        frames = -(-1024 // p)
        for _ in range(4):
            frames = (frames + 2 * 2 - 5) // 3 + 1
        assert logits.shape == (1, frames * p)
    # the conditioning table starts at zero (Vocos), so conditioning changes nothing until trained
    d, cond = mpd.discriminators[0], torch.tensor([2])
    torch.testing.assert_close(d(y, cond)[0], lr[0])
    torch.nn.init.normal_(d.emb.weight)
    assert not torch.allclose(d(y, cond)[0], lr[0])

    mrd = MultiResolutionDiscriminator(num_embeddings=4)
    assert sum(p.numel() for p in mrd.parameters()) / 1e6 == pytest.approx(0.60, abs=0.01)
    y, y_hat = torch.randn(1, 2048) * 0.1, torch.randn(1, 2048) * 0.1  # reflect padding needs T > n_fft / 2
    lr, lf, fr, ff = mrd(y, y_hat, torch.tensor([1]))
    assert len(lr) == 3 and [len(f) for f in fr] == [6] * 3
    for (n_fft, hop, _), logits, fmaps in zip(((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)), lr, fr):
        bins, frames = n_fft // 2 + 1, 2048 // hop + 1
        assert fmaps[0].shape == (1, 64, (bins - 1) // 2 + 1, (frames - 1) // 2 + 1)
        assert logits.shape[0] == 1 and logits.ndim == 2
    total = discriminator_loss(lr, lf) + generator_loss(lf, "hinge_clamped") + feature_matching_loss(fr, ff)
    assert torch.isfinite(total)


def test_discriminator_gradients_reach_generator_output():
    mrd = MultiResolutionDiscriminator(resolutions=((256, 64, 256),), channels=8)
    y_hat = (torch.randn(2, 1024) * 0.1).requires_grad_(True)
    _, lf, fr, ff = mrd(torch.randn(2, 1024) * 0.1, y_hat)
    (generator_loss(lf, "hinge_clamped") + feature_matching_loss(fr, ff)).backward()
    assert y_hat.grad is not None and float(y_hat.grad.abs().sum()) > 0


@torch.no_grad()
def test_dac_discriminator_shapes():
    d = DACDiscriminator(periods=(3,), fft_sizes=(512, 256))
    y, y_hat = torch.randn(1, 2048) * 0.1, torch.randn(1, 2048) * 0.1
    lr, lf, fr, ff = d(y, y_hat)
    assert len(lr) == 3 and [len(f) for f in fr] == [5, 25, 25]
    assert lr[0].shape[:2] == (1, 1) and lr[0].shape[-1] == 3
    # band discriminator: frames = T / hop (match_stride framing), bins split into 5 bands then halved 3 times
    assert lr[1].shape[2] == 2048 // 128 and lr[2].shape[2] == 2048 // 64
    loss = discriminator_loss(lr, lf, "lsgan") + generator_loss(lf, "lsgan") + feature_matching_loss(fr, ff)
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------- spectral
def test_mel_loss_matches_vocos_formula_and_is_zero_on_identity():
    import torchaudio

    torch.manual_seed(0)
    y = torch.randn(2, 4800) * 0.1
    y_hat = y + 0.05 * torch.randn(2, 4800)
    loss = MelSpectrogramLoss(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100)
    assert float(loss(y, y)) == 0.0
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100,
                                               center=True, power=1)
    expected = F.l1_loss(torch.log(mel(y).clamp(min=1e-7)), torch.log(mel(y_hat).clamp(min=1e-7)))
    torch.testing.assert_close(loss(y_hat, y), expected)
    assert float(loss(y.unsqueeze(1), y_hat.unsqueeze(1))) > 0


def test_multi_resolution_losses_zero_on_identity_and_monotone():
    torch.manual_seed(1)
    y = torch.randn(1, 4000) * 0.1
    noise = torch.randn(1, 4000)
    for loss in (MultiResolutionMelLoss(sample_rate=16000), MultiResolutionSTFTLoss()):
        assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
        values = [float(loss(y + a * noise, y)) for a in (0.001, 0.01, 0.1)]
        assert values[0] < values[1] < values[2]
    with pytest.raises(ValueError, match="differ"):
        MelSpectrogramLoss()(y, y[:, :100])


# ------------------------------------------------------------------------------------------------- LPIPS
def _vgg_features():
    """torchvision's vgg16().features (without the 120M-parameter classifier), quickly filled with He-scaled noise."""
    from torchvision.models.vgg import cfgs, make_layers

    from zoo.losses.perceptual import _skip_init

    with _skip_init():
        features = make_layers(cfgs["D"])
    with torch.no_grad():
        for name, p in features.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn_like(p) * (2 / fan_in) ** 0.5 if p.ndim > 1 else torch.randn_like(p) * 0.01)
    return features


def test_lpips_equals_lpips_package(tmp_path, monkeypatch):
    import lpips
    import lpips.pretrained_networks as pn

    torch.manual_seed(0)
    features = _vgg_features()
    path = tmp_path / "vgg16_random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    ours = LPIPS("vgg", backbone_weights=path)

    # the reference: lpips' own slicing of a torchvision-style trunk holding the same weights
    class _Stub:
        def __init__(self, *args, **kwargs):
            self.features = features

    monkeypatch.setattr(pn.tv, "vgg16", _Stub)
    ref = lpips.LPIPS(net="vgg", verbose=False).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    x[1] = y[1]  # one identical pair: distance 0
    with torch.no_grad():
        expected = ref(x * 2 - 1, y * 2 - 1).flatten()
    xg = x.clone().requires_grad_(True)
    got = ours(xg, y)
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)
    assert float(got[0]) > 0 and abs(float(got[1])) < 1e-6
    # differentiable in the inputs, frozen in its weights
    got.sum().backward()
    assert xg.grad is not None and not any(p.requires_grad for p in ours.parameters())


def test_lpips_missing_backbone_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("ZOO_LPIPS_BACKBONE", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        find_backbone_weights("vgg")
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert find_backbone_weights("vgg") == cached
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        find_backbone_weights("alex", tmp_path / "nope.pth")


def test_lpips_rejects_wrong_state_dict(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="features.0.weight"):
        LPIPS("vgg", backbone_weights=tmp_path / "bad.pth")


# ------------------------------------------------------------------------------------------------- semantic
def test_semantic_loss_values_and_grid_alignment():
    t = torch.randn(2, 8, 4, 4)
    loss = SemanticAlignmentLoss()
    assert float(loss(t, teacher_features=t)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-t, teacher_features=t)) == pytest.approx(2.0, abs=1e-5)
    a = torch.zeros(1, 2, 1, 1)
    a[:, 0] = 1
    b = torch.zeros(1, 2, 1, 1)
    b[:, 1] = 1
    assert float(loss(a, teacher_features=b)) == pytest.approx(1.0)
    # teacher 8x8 map averaged down to the student's 4x4 token grid ([B, N, C] tokens)
    big = t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    tokens = t.flatten(2).transpose(1, 2)
    assert float(loss(tokens, teacher_features=big)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="projector"):
        loss(torch.randn(2, 16, 5), teacher_features=t)


def test_semantic_projector_trains():
    loss = SemanticAlignmentLoss(student_dim=6, teacher_dim=8, projector="mlp", hidden_dim=16)
    s = torch.randn(2, 16, 6, requires_grad=True)
    value = loss(s, teacher_features=torch.randn(2, 8, 4, 4))
    value.backward()
    assert s.grad is not None and all(p.grad is not None for p in loss.parameters())


def test_teacher_from_official_dinov2_layout(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # a 1-block stand-in in the official DINOv2 file layout: 518 px pos-embed (37x37) and a mask_token
    official = timm.create_model("vit_small_patch14_dinov2", depth=1, img_size=518)
    state = dict(official.state_dict())
    state["mask_token"] = torch.zeros(1, 384)
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    teacher = build_teacher("dinov2_vits14", weights=tmp_path / "dinov2_vits14_pretrain.pth", depth=1)
    images = torch.rand(2, 3, 64, 64)
    feats = teacher(images)
    assert feats.shape == (2, 384, 16, 16) and teacher.dim == 384
    # same patch features as the 518 px model on the same 224 px input, up to the resampled position embedding
    assert torch.isfinite(feats).all() and not feats.requires_grad
    loss = SemanticAlignmentLoss(teacher, student_dim=12, projector="linear")
    value = loss(torch.randn(2, 64, 12, requires_grad=True), images=images)
    assert torch.isfinite(value)
    with pytest.raises(FileNotFoundError, match="needs a local weights file"):
        build_teacher("dinov2_vitb14")


def test_efficientnet_lite0_teacher_classifies_the_sample_photo():
    pytest.importorskip("timm")
    try:
        teacher = build_teacher("efficientnet_lite0")
    except FileNotFoundError as e:
        pytest.skip(f"offline EfficientNet-Lite0 weights not installed: {e}")
    from zoo.data import sample_image

    image = sample_image()  # the skimage coffee photo: an espresso cup
    x = F.interpolate(image, size=224, mode="bicubic", antialias=True, align_corners=False)
    with torch.no_grad():
        probs = teacher.model((x - teacher.mean) / teacher.std).softmax(-1)[0]
    assert int(probs.argmax()) == 967 and float(probs[967]) > 0.5  # ImageNet class 967: espresso
    feats = teacher(image)
    assert feats.shape == (1, 1280, 7, 7)
    mid = Teacher(teacher.model, layer=-3)(image)
    assert mid.ndim == 4 and mid.shape[1] < 1280

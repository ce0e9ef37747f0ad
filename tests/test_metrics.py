"""zoo.metrics: each metric against the reference implementation it claims to equal, pFID's perturbation rate, the
evaluation runner (images and audio, one process) and `zoo eval` with two Accelerate CPU processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from zoo.api import AudioTokenizer, Codebook, ImageTokenizer, Tokens
from zoo.io import write_audio, write_image
from zoo.metrics import audio as A
from zoo.metrics.codebook import CodebookUsage, usage_from_counts
from zoo.metrics.fid import FID, FeatureStats, find_inception_weights, frechet_distance, tf_bilinear_resize
from zoo.metrics.image import psnr, ssim
from zoo.metrics.pfid import change_rate, expected_change_rate, perturb_batch, perturb_ids, perturb_tokens
from zoo.quant import FSQ, VectorQuantizer

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------- helpers
class TinyExtractor(nn.Module):
    """A fixed random conv net standing in for Inception: uint8-valued images -> 16-d features."""

    name = "tiny-test-extractor"
    resize = "none"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.05)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x / 255.0)).mean((2, 3))


class TinyImageVQ(ImageTokenizer):
    """Patch conv -> VQ -> transposed conv: enough of a tokenizer to drive the evaluation runner."""

    def __init__(self, image_size: int = 32, codebook_size: int = 32, dim: int = 4, patch: int = 8) -> None:
        super().__init__()
        self.image_size = image_size
        self.encoder = nn.Conv2d(3, dim, patch, patch)
        self.quantizer = VectorQuantizer(codebook_size, dim)
        with torch.no_grad():
            self.quantizer.embed.copy_(torch.randn(codebook_size, dim, generator=torch.Generator().manual_seed(1)))
        self.decoder = nn.ConvTranspose2d(dim, 3, patch, patch)

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer)]

    def encode(self, x: torch.Tensor, **kwargs) -> Tokens:
        x = self.check_input(x)
        z = self.encoder(x * 2 - 1).permute(0, 2, 3, 1)
        out = self.quantizer(z)
        return Tokens(out.ids.flatten(1), layout=tuple(z.shape[1:3]))

    def decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:
        self.check_tokens(tokens)
        h, w = tokens.layout
        codes = self.quantizer.lookup(tokens.ids).reshape(tokens.ids.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return (self.decoder(codes) + 1) / 2


class TinyAudioFSQ(AudioTokenizer):
    """Frames of 80 samples -> linear -> FSQ -> linear: an audio tokenizer with an implicit codebook."""

    def __init__(self, sample_rate: int = 8000, hop: int = 80) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop = hop
        self.quantizer = FSQ([5, 5, 4])
        self.encoder = nn.Linear(hop, 3)
        self.decoder = nn.Linear(3, hop)

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer)]

    def encode(self, x: torch.Tensor, sample_rate: int | None = None, **kwargs) -> Tokens:
        wav, lengths = self.prepare_audio(x, sample_rate=sample_rate)
        pad = (-wav.shape[-1]) % self.hop
        frames = torch.nn.functional.pad(wav, (0, pad)).unflatten(-1, (-1, self.hop))
        out = self.quantizer(self.encoder(frames))
        return Tokens(out.ids, layout=(out.ids.shape[1],), meta={"num_samples": lengths})

    def decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:
        self.check_tokens(tokens)
        audio = self.decoder(self.quantizer.lookup(tokens.ids)).flatten(1)
        return self.finish_audio(audio, tokens)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid / TTUR formula with scipy.linalg.sqrtm."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _photos(folder: Path, count: int, size: int = 40) -> list[Path]:
    g = torch.Generator().manual_seed(3)
    paths = []
    for i in range(count):
        coarse = torch.rand(1, 3, 5, 5, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(size, size + 8), mode="bilinear")[0]
        paths.append(write_image(image, folder / f"img_{i:02d}.png"))
    return paths


def _speechlike(seconds: float, rate: int, seed: int) -> torch.Tensor:
    """Harmonic 'voiced' segments with syllable-rate amplitude modulation (PESQ needs speech-like input)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 110 + 40 * torch.rand(1, generator=g)
    voice = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = torch.sin(2 * math.pi * 3.0 * t).clamp(min=0) ** 2
    return (0.3 * voice * envelope + 0.003 * torch.randn(t.shape, generator=g)).float()


# -------------------------------------------------------------------------------------------------------- FID
def test_tf_bilinear_resize_matches_the_stylegan_grid_sample_formulation():
    # StyleGAN / clean-fid "legacy_tensorflow": affine_grid shifted so output pixel i samples input i * in / out.
    x = torch.rand(2, 3, 37, 53) * 255
    for size in [(299, 299), (20, 11), (74, 53)]:
        b, c, h, w = x.shape
        theta = torch.eye(2, 3)
        theta[0, 2] += 1 / w - 1 / size[1]
        theta[1, 2] += 1 / h - 1 / size[0]
        grid = torch.nn.functional.affine_grid(theta[None].repeat(b, 1, 1), [b, c, *size], align_corners=False)
        ref = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        assert torch.allclose(tf_bilinear_resize(x, size), ref, atol=5e-3)
    # and it is not torch's half-pixel bilinear
    half_pixel = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (tf_bilinear_resize(x, (299, 299)) - half_pixel).abs().max() > 1


def test_frechet_distance_equals_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    for dim, n in [(8, 300), (32, 80), (64, 40)]:  # the last one has rank-deficient covariances (n < dim)
        a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3
        b = rng.standard_normal((n, dim)) * 1.2 + 0.5
        mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
        mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
        ours = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
        assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)
        self_distance = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu1, s1)))
        assert self_distance == pytest.approx(0, abs=1e-7 * np.trace(s1))


def test_feature_stats_are_float64_and_add_across_shards():
    feats = torch.randn(50, 6, generator=torch.Generator().manual_seed(0)) * 3 + 100
    whole = FeatureStats()
    whole.update(feats)
    parts = [FeatureStats(), FeatureStats()]
    parts[0].update(feats[:17])
    parts[1].update(feats[17:])
    # what accelerator.reduce(sum) does across two processes, by hand (reduce visits count, sum, outer)
    other = iter([parts[1].count, parts[1].sum, parts[1].outer])
    merged = parts[0].reduce(lambda t: t + next(other))
    mean, cov = merged.mean_cov()
    assert mean.dtype == torch.float64 and merged.n == 50
    np.testing.assert_allclose(mean.numpy(), feats.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(feats.double().numpy(), rowvar=False), rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().mean_cov()


def test_fid_with_an_injected_extractor_equals_the_reference_on_its_features():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(24, 3, 16, 16, generator=g)
    fake = (real + 0.2 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    fid = FID(extractor=TinyExtractor(), reference="unit test")
    fid.update(real[:10], real=True)
    fid.update(real[10:], real=True)
    fid.update(fake, real=False)
    value = fid.compute()
    with torch.no_grad():
        fr = fid.extractor((real * 255).round()).double().numpy()
        ff = fid.extractor((fake * 255).round()).double().numpy()
    expected = _scipy_frechet(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert value > 0
    protocol = fid.protocol()
    assert protocol["extractor"] == "tiny-test-extractor" and protocol["n_real"] == 24 and protocol["n_fake"] == 24
    assert protocol["resolution"] == [16, 16] and protocol["reference"] == "unit test"
    same = FID(extractor=TinyExtractor())
    same.update(real, real=True)
    same.update(real, real=False)
    assert same.compute() == pytest.approx(0, abs=1e-8)


def test_inception_weights_missing_says_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="FID Inception weights not found at"):
        find_inception_weights(tmp_path / "nope.pt")


def test_real_tf_inception_features():
    try:
        path = find_inception_weights()
    except FileNotFoundError as err:
        pytest.skip(f"TF Inception weights absent ({err})")
    from zoo.metrics.fid import InceptionV3, quantize_uint8

    net = InceptionV3(path)
    assert len(net.sha256) == 64
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    feats = net(quantize_uint8(images))
    assert feats.shape == (2, 2048) and (feats >= 0).all() and feats.std() > 0  # pool3 after ReLU
    # the whole TorchScript module on our TF-resized, (x - 128) / 128 input gives the same features
    whole = torch.jit.load(str(path), map_location="cpu")
    expected = whole((tf_bilinear_resize(quantize_uint8(images), (299, 299)) - 128) / 128).reshape(-1, 2048)
    torch.testing.assert_close(feats, expected)
    protocol = FID(extractor=net).protocol()
    assert protocol["weights_sha256"] == net.sha256 and protocol["extractor"] == "inception-v3-tf-2015-12-05"
    assert "tf1-bilinear" in protocol["resize"]


# ------------------------------------------------------------------------------------------------------- pFID
def _vq_codebook(size: int = 256, dim: int = 6) -> Codebook:
    vq = VectorQuantizer(size, dim)
    with torch.no_grad():
        vq.embed.copy_(torch.randn(size, dim, generator=torch.Generator().manual_seed(0)))
    return Codebook(vq)


@pytest.mark.parametrize("alpha,delta", [(0.5, 4), (1.0, 2), (0.3, 100)])
def test_perturb_ids_change_rate_is_alpha_times_delta_minus_one_over_delta(alpha, delta):
    book = _vq_codebook()
    ids = torch.randint(book.size, (40, 500), generator=torch.Generator().manual_seed(1))
    out = perturb_ids(ids, book, alpha, delta, torch.Generator().manual_seed(2))
    expected = expected_change_rate(alpha, delta)
    assert expected == pytest.approx(alpha * (delta - 1) / delta)
    assert change_rate(ids, out) == pytest.approx(expected, abs=0.01)
    # every replacement is one of the delta nearest codes
    changed = out != ids
    nearest = book.neighbors(ids[changed], delta)
    assert (nearest == out[changed, None]).any(-1).all()


def test_perturbation_of_an_implicit_fsq_grid_stays_among_nearest_grid_points():
    book = Codebook(FSQ([8, 5, 5, 5]))
    ids = torch.randint(book.size, (20, 400), generator=torch.Generator().manual_seed(0))
    out = perturb_ids(ids, book, 0.8, 5, torch.Generator().manual_seed(0))
    assert change_rate(ids, out) == pytest.approx(expected_change_rate(0.8, 5), abs=0.01)
    changed = out != ids
    assert (book.neighbors(ids[changed], 5) == out[changed, None]).any(-1).all()
    # grid spacing is 1/4 on the 8-level axis and 1/2 on the 5-level axes: the 5 nearest are at most 1/2 away
    grid = book.embeddings()
    assert (grid[out[changed]] - grid[ids[changed]]).norm(dim=-1).max() <= 0.5 + 1e-6


def test_perturbation_is_seeded_and_respects_padding_and_columns():
    book = _vq_codebook(64)
    ids = torch.randint(64, (4, 30, 2), generator=torch.Generator().manual_seed(0))
    tokens = Tokens(ids, lengths=torch.tensor([30, 10, 0, 25]), layout=(30,))
    a = perturb_tokens(tokens, [book, book], 1.0, 8, torch.Generator().manual_seed(5))
    b = perturb_tokens(tokens, [book, book], 1.0, 8, torch.Generator().manual_seed(5))
    c = perturb_tokens(tokens, [book, book], 1.0, 8, torch.Generator().manual_seed(6))
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    padding = ~tokens.valid_mask()
    assert torch.equal(a.ids[padding], ids[padding]) and (a.ids[~padding] != ids[~padding]).any()
    assert change_rate(tokens, a) == pytest.approx(7 / 8, abs=0.06)
    with pytest.raises(ValueError, match="K=2 parallel columns but 3 codebooks"):
        perturb_tokens(tokens, [book] * 3, 0.5, 4)
    with pytest.raises(ValueError, match="alpha"):
        perturb_ids(ids[..., 0], book, 1.5, 4)
    # delta larger than the codebook: the whole codebook is the candidate set
    assert expected_change_rate(1.0, 1000, 64) == pytest.approx(63 / 64)
    wide = perturb_ids(ids[..., 0], book, 1.0, 1000, torch.Generator().manual_seed(0))
    assert wide.max() < 64


def test_perturb_batch_touches_only_the_first_beta_fraction():
    book = _vq_codebook(32)
    ids = torch.randint(32, (10, 64), generator=torch.Generator().manual_seed(0))
    out = perturb_batch(ids, book, beta=0.3, alpha=1.0, delta=4, generator=torch.Generator().manual_seed(0))
    assert (out[:3] != ids[:3]).any() and torch.equal(out[3:], ids[3:])


# --------------------------------------------------------------------------------------------------- codebook
def test_codebook_usage_perplexity_entropy():
    counts = torch.tensor([4.0, 4.0, 0.0, 0.0])
    stats = usage_from_counts(counts)
    assert stats["usage"] == 0.5 and stats["perplexity"] == pytest.approx(2.0) and stats["entropy_bits"] == 1.0
    book = _vq_codebook(8)
    usage = CodebookUsage([book])
    usage.update(Tokens(torch.tensor([[0, 1, 1, 7], [2, 2, 5, 5]]), lengths=torch.tensor([4, 2])))
    out = usage.reduce(lambda t: t * 2).compute()  # a 2-process sum of equal shards
    assert out["num_tokens"] == 12 and out["usage"] == pytest.approx(4 / 8)
    p = np.array([1, 2, 2, 1]) / 6
    assert out["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


# ------------------------------------------------------------------------------------------------------ image
def test_psnr_and_ssim_equal_scikit_image():
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the SSIM reference")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 33, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours_ssim, ours_psnr = ssim(x, y), psnr(x, y)
    for i in range(2):
        a, b = x[i].permute(1, 2, 0).double().numpy(), y[i].permute(1, 2, 0).double().numpy()
        ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1.0, channel_axis=2)
        assert float(ours_ssim[i]) == pytest.approx(ref, abs=1e-10)
        assert float(ours_psnr[i]) == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    assert float(ssim(x, x)[0]) == pytest.approx(1.0)


def test_lpips_equals_the_lpips_package_with_the_same_backbone(tmp_path):
    lpips = pytest.importorskip("lpips")
    from zoo.metrics.lpips import LPIPSMetric

    torch.manual_seed(0)
    # published linear heads from the wheel, a random trunk: saved as a torchvision backbone file
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    state = {f"features.{name.split('.', 1)[1]}": value for name, value in reference.net.state_dict().items()}
    torch.save(state, tmp_path / "vgg16-397923af.pth")
    metric = LPIPSMetric("vgg", backbone=tmp_path / "vgg16-397923af.pth")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 48, 48, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten().double()
    torch.testing.assert_close(metric(x, y), expected)
    assert metric.protocol()["net"] == "vgg" and len(metric.protocol()["backbone_sha256"]) == 64


def test_lpips_without_backbone_weights_says_where_to_put_them(tmp_path):
    pytest.importorskip("lpips")
    from zoo.metrics.lpips import LPIPSMetric

    missing = tmp_path / "weights" / "vgg.pth"
    with pytest.raises(A.MetricUnavailable, match=f"backbone weights not found at {missing}, put vgg16-397923af.pth"):
        LPIPSMetric("vgg", backbone=missing)


# ------------------------------------------------------------------------------------------------------ audio
def test_stoi_and_pesq_equal_the_packages():
    pystoi = pytest.importorskip("pystoi")
    pesq_package = pytest.importorskip("pesq")
    rate = 16000
    ref = _speechlike(2.0, rate, 0)
    est = ref + 0.02 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    assert A.stoi(ref, est, rate) == pystoi.stoi(ref.double().numpy(), est.double().numpy(), rate, extended=False)
    direct = pesq_package.pesq(rate, ref.numpy(), est.numpy(), "wb")
    assert A.pesq(ref, est, rate, mode="wb") == pytest.approx(direct, abs=1e-6)
    assert 1.0 < direct < 4.7
    # 24 kHz input: resampled with torchaudio to 16 kHz (wb) and 8 kHz (nb), then the package
    import torchaudio.functional as AF

    ref24, est24 = _speechlike(1.5, 24000, 2), _speechlike(1.5, 24000, 2) * 0.9
    for mode, target in (("wb", 16000), ("nb", 8000)):
        r, e = AF.resample(ref24, 24000, target), AF.resample(est24, 24000, target)
        assert A.pesq(ref24, est24, 24000, mode=mode) == pytest.approx(
            pesq_package.pesq(target, r.numpy(), e.numpy(), mode), abs=1e-6)
    with pytest.raises(A.MetricUnavailable, match="clip too short for PESQ: 0.200 s, the minimum is 0.25 s"):
        A.pesq(ref[:3200], est[:3200], rate)
    with pytest.raises(A.MetricUnavailable, match="clip too short .* for STOI"):  # pystoi's 1e-5 placeholder
        A.stoi(ref[:3200], est[:3200], rate)


def test_si_sdr_stft_and_mel_distances():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 8000, generator=g) * 0.1
    noise = torch.randn(2, 8000, generator=g) * 0.1
    ref, noise = ref - ref.mean(-1, keepdim=True), noise - noise.mean(-1, keepdim=True)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / (ref * ref).sum(-1, keepdim=True) * ref  # orthogonal
    est = 3 * ref + 0.5 * noise  # SI-SDR ignores the gain
    expected = 10 * torch.log10((3 * ref).pow(2).sum(-1) / (0.5 * noise).pow(2).sum(-1))
    torch.testing.assert_close(A.si_sdr(ref, est), expected.double(), atol=1e-4, rtol=0)
    for fn in (A.stft_distance, lambda r, e: A.mel_distance(r, e, 16000)):
        assert torch.all(fn(ref, ref) == 0)
        small, large = fn(ref, ref + 0.01 * noise), fn(ref, ref + 0.5 * noise)
        assert torch.all(small > 0) and torch.all(large > small)
    with pytest.raises(ValueError, match="differ"):
        A.mel_distance(ref, est[:, :-1], 16000)


def test_optional_quality_predictors_equal_their_packages():
    from zoo.metrics import quality

    clip = _speechlike(1.2, 24000, 4)
    try:
        import distillmos
    except ImportError:
        with pytest.raises(A.MetricUnavailable, match="pip install --no-deps distillmos"):
            quality.distillmos(clip, 24000)
    else:
        import torchaudio.functional as AF

        model = distillmos.ConvTransformerSQAModel().eval()
        with torch.no_grad():
            direct = float(model(AF.resample(clip, 24000, 16000)[None]).reshape(-1)[0])
        assert quality.distillmos(clip, 24000) == pytest.approx(direct, abs=1e-5)
        assert 1.0 <= direct <= 5.0
    ref, est = _speechlike(1.5, 16000, 5), _speechlike(1.5, 16000, 5) * 0.8
    try:
        from visqol.api import VisqolApi
    except ImportError:
        with pytest.raises(A.MetricUnavailable, match="pip install visqol-python"):
            quality.visqol(ref, est, 16000)
    else:
        api = VisqolApi()
        api.create(mode="speech", use_lattice_model=quality.visqol_mapper() == "lattice")
        direct = api.measure_from_arrays(ref.double().numpy(), est.double().numpy(), 16000).moslqo
        assert quality.visqol(ref, est, 16000) == pytest.approx(direct, abs=1e-9)


# -------------------------------------------------------------------------------------------- runner and CLI
def test_evaluate_images_writes_every_metric_or_its_reason(tmp_path):
    from accelerate import Accelerator

    from zoo.metrics.evaluate import evaluate

    _photos(tmp_path / "data", 5)
    tok = TinyImageVQ()
    report = evaluate(tok, tmp_path / "data", tmp_path / "out", accelerator=Accelerator(cpu=True), batch_size=2,
                      fid_extractor=TinyExtractor(), lpips_backbone=tmp_path / "missing-vgg16.pth",
                      pfid_alpha=0.5, pfid_delta=4, progress=False)
    metrics = report["metrics"]
    assert set(metrics) >= {"psnr", "ssim", "lpips", "rfid", "pfid", "usage"}
    assert metrics["psnr"]["n"] == 5 and math.isfinite(metrics["psnr"]["value"])
    assert metrics["lpips"]["value"] is None and "missing-vgg16.pth" in metrics["lpips"]["skipped"]
    assert metrics["rfid"]["value"] > 0 and metrics["rfid"]["protocol"]["n_real"] == 5
    pfid = metrics["pfid"]
    assert pfid["value"] > 0 and pfid["protocol"]["alpha"] == 0.5 and pfid["protocol"]["delta"] == 4
    assert pfid["protocol"]["change_rate"] == pytest.approx(0.375, abs=0.15)  # 5 images x 16 tokens
    assert 0 < metrics["usage"]["value"] <= 1
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["metrics"]["psnr"]["value"] == metrics["psnr"]["value"]
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| lpips | n/a | lower | skipped: " in table and "| pfid |" in table
    assert (tmp_path / "out" / "reconstructions.png").is_file()
    assert len((tmp_path / "out" / "items.jsonl").read_text().splitlines()) == 5
    # same seed, same numbers
    again = evaluate(tok, tmp_path / "data", tmp_path / "out2", accelerator=Accelerator(cpu=True), batch_size=3,
                     fid_extractor=TinyExtractor(), pfid_alpha=0.5, pfid_delta=4, progress=False)
    assert again["metrics"]["pfid"]["value"] == pytest.approx(pfid["value"], rel=1e-5)  # batch 3 vs 2: fp32 noise


def test_evaluate_passes_encode_and_decode_options_and_refuses_unknown_ones(tmp_path, capsys):
    """`zoo eval --num-tokens K --steps S --guidance G`: a variable-length family is scored at K tokens with the
    given sampler (recorded in the report); a family whose encode takes no num_tokens is refused before reading."""
    from accelerate import Accelerator

    import zoo
    from zoo.metrics.cli import main as eval_main
    from zoo.metrics.evaluate import evaluate

    _photos(tmp_path / "data", 2)
    tok = zoo.load("flextok-tiny")  # bundled weights: a random decoder's zero-initialised gates ignore the tokens
    kwargs = dict(accelerator=Accelerator(cpu=True), fid=False, progress=False, lpips_backbone=tmp_path / "none.pth")
    one = evaluate(tok, tmp_path / "data", tmp_path / "k1", encode_kwargs={"num_tokens": 1},
                   decode_kwargs={"steps": 2, "guidance": 1.0}, **kwargs)
    full = evaluate(tok, tmp_path / "data", tmp_path / "k32", decode_kwargs={"steps": 2, "guidance": 1.0}, **kwargs)
    assert one["encode_kwargs"] == {"num_tokens": 1} and one["decode_kwargs"] == {"steps": 2, "guidance": 1.0}
    assert one["metrics"]["psnr"]["value"] != full["metrics"]["psnr"]["value"]  # the decoder saw other tokens
    with pytest.raises(ValueError, match="encode takes no num_tokens"):
        evaluate(zoo.load("gigatok-tiny", weights=None), tmp_path / "data", tmp_path / "bad",
                 encode_kwargs={"num_tokens": 4}, **kwargs)
    code = eval_main(["gigatok-tiny", "--weights", "none", "--data", str(tmp_path / "data"), "--out",
                      str(tmp_path / "cli"), "--num-tokens", "4", "--no-fid", "--no-progress"])
    assert code == 2 and "takes no num_tokens" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()  # refused before anything was written


def test_evaluate_audio_scores_clips_and_explains_short_ones(tmp_path):
    from accelerate import Accelerator

    from zoo.metrics.evaluate import evaluate

    write_audio(_speechlike(1.0, 16000, 0), tmp_path / "data" / "a.wav", 16000)
    write_audio(_speechlike(1.0, 16000, 1), tmp_path / "data" / "b.wav", 16000)
    write_audio(_speechlike(0.1, 16000, 2), tmp_path / "data" / "c_short.wav", 16000)
    report = evaluate(TinyAudioFSQ(), tmp_path / "data", tmp_path / "out", accelerator=Accelerator(cpu=True),
                      audio_extras=(), progress=False, num_examples=2)
    metrics = report["metrics"]
    assert set(metrics) >= {"stoi", "pesq", "mel_distance", "stft_distance", "si_sdr", "usage"}
    assert metrics["si_sdr"]["n"] == 3 and metrics["mel_distance"]["n"] == 2 and metrics["pesq"]["n"] == 2
    assert "clip too short for PESQ" in next(iter(metrics["pesq"]["skipped_items"]))
    assert "clip too short for mel_distance" in next(iter(metrics["mel_distance"]["skipped_items"]))
    assert metrics["stoi"]["n"] == 2 and "too short" in next(iter(metrics["stoi"]["skipped_items"]))
    assert metrics["pesq"]["protocol"]["mode"] == "wb"
    examples = sorted(p.name for p in (tmp_path / "out" / "examples").iterdir())
    assert examples == ["00_a_original.wav", "00_a_reconstruction.wav", "00_a_spectrogram.png",
                        "01_b_original.wav", "01_b_reconstruction.wav", "01_b_spectrogram.png"]


def _tiny_registered(modality: str) -> str:
    import zoo

    names = [n for n in zoo.list_models("*-tiny") if zoo.get_spec(n).modality == modality]
    if not names:
        pytest.skip(f"no registered *-tiny {modality} tokenizer yet")
    return names[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cli_eval_one_process_then_two_accelerate_cpu_processes_agree(tmp_path):
    name = _tiny_registered("image")
    import zoo

    size = zoo.load(name, weights=None).input_size[0]
    _photos(tmp_path / "data", 4, size=size)
    common = [name, "--data", str(tmp_path / "data"), "--weights", "none", "--batch-size", "1", "--no-progress",
              "--pfid-delta", "4", "--cpu"]
    fid = [] if _inception_present() else ["--no-fid"]
    from zoo.metrics.cli import main

    assert main(["eval", *common, *fid, "--out", str(tmp_path / "one")]) == 0
    # accelerate's `--cpu` launcher starts one process (several need MPI); torchrun's launcher plus the script's
    # --cpu gives two gloo CPU processes
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           str(REPO / "recipes" / "eval_recon.py"), *common, *fid, "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    for key in ("psnr", "ssim", "usage", "rfid", "pfid"):
        a, b = one["metrics"][key]["value"], two["metrics"][key]["value"]
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-5, abs=1e-6), key
    assert len((tmp_path / "two" / "items.jsonl").read_text().splitlines()) == 4


def _inception_present() -> bool:
    try:
        find_inception_weights()
    except FileNotFoundError:
        return False
    return True


def test_evaluate_skips_unreadable_files_with_the_reason_or_stops_with_strict(tmp_path, capsys):
    """One corrupt file in a folder does not lose the evaluation: it is listed with its reason and counted;
    --strict stops at it; float audio above full scale follows --over-full-scale."""
    import soundfile as sf
    from accelerate import Accelerator

    from zoo.metrics.cli import main
    from zoo.metrics.evaluate import evaluate

    _photos(tmp_path / "data", 3)
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "data" / "empty.jpg").write_bytes(b"")
    tok = TinyImageVQ()
    options = dict(accelerator=Accelerator(cpu=True), batch_size=2, fid=False, progress=False,
                   lpips_backbone=tmp_path / "missing.pth")
    report = evaluate(tok, tmp_path / "data", tmp_path / "out", **options)
    assert (report["num_files"], report["num_items"], report["num_skipped"]) == (5, 3, 2)
    assert sorted(Path(s["file"]).name for s in report["skipped"]) == ["broken.png", "empty.jpg"]
    assert all("cannot read" in s["reason"] for s in report["skipped"])
    assert report["metrics"]["psnr"]["n"] == 3
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_skipped"] == 2
    assert "2 unreadable files skipped" in (tmp_path / "out" / "metrics.md").read_text()
    with pytest.raises(ValueError, match="broken.png"):
        evaluate(tok, tmp_path / "data", tmp_path / "strict", strict=True, **options)

    audio = tmp_path / "audio"
    write_audio(_speechlike(0.5, 16000, 0), audio / "a.wav", 16000)
    loud = 1.5 * _speechlike(0.5, 16000, 1).numpy() / np.abs(_speechlike(0.5, 16000, 1).numpy()).max()
    sf.write(str(audio / "loud.wav"), loud.astype(np.float32), 16000, subtype="FLOAT")
    common = ["eval", "--data", str(audio), "--weights", "none", "--no-progress", "--audio-extras", "",
              "--num-examples", "0"]
    import zoo
    from zoo.registry import register_family, register_model, unregister_model

    register_family("metrics_tiny_audio")(type("MetricsTinyAudio", (TinyAudioFSQ,), {}))
    register_model("metrics-tiny-audio", "metrics_tiny_audio", {}, description="test")
    try:
        capsys.readouterr()
        assert main([*common, "metrics-tiny-audio", "--out", str(tmp_path / "a1")]) == 3
        err = capsys.readouterr().err
        assert "loud.wav" in err and "above full scale" in err and "scored 1 of 2 files" in err
        assert main([*common, "metrics-tiny-audio", "--out", str(tmp_path / "a2"), "--over-full-scale",
                     "normalize"]) == 0
        assert json.loads((tmp_path / "a2" / "metrics.json").read_text())["num_items"] == 2
    finally:
        unregister_model("metrics-tiny-audio")
    assert zoo.list_models("metrics-tiny-audio") == []

"""WavTokenizer: official parity (fixture), converter refusals, padded batches, resampling, trimming, bandwidth_id."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import fixture_path, needs_official_fixture, official_fixture

import zoo
from zoo.api import ForwardOutput
from zoo.audio.wavtokenizer import WavTokenizer


FIXTURE = fixture_path("wavtokenizer")
CKPT, YAML, IO = FIXTURE / "wavtokenizer_fixture.ckpt", FIXTURE / "config.yaml", FIXTURE / "io.safetensors"
needs_fixture = needs_official_fixture("wavtokenizer", CKPT.name)

TINY = {"n_filters": 4, "latent_dim": 16, "codebook_size": 64, "dim": 32, "intermediate_dim": 48, "num_layers": 2}


def _clip(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 24000
    f = 100 + 900 * torch.rand(3, 1, generator=g)
    x = (torch.sin(2 * torch.pi * f * t) * torch.rand(3, 1, generator=g)).sum(0)
    return (0.6 * x / x.abs().max().clamp_min(1e-3) + 0.01 * torch.randn(n, generator=g)).clamp(-1, 1)


@pytest.fixture(scope="module")
def tiny() -> WavTokenizer:
    """A random tiny model whose codebook went through the k-means init and whose AdaLN rows differ."""
    torch.manual_seed(0)
    model = WavTokenizer(**TINY).train()
    model(torch.stack([_clip(9600, s) for s in range(4)]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("scale.weight", "shift.weight")):
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def official() -> WavTokenizer:
    official_fixture("wavtokenizer", CKPT.name)
    return zoo.from_official("wavtokenizer", CKPT, config=YAML)


# ---------------------------------------------------------------------------------------------- official parity

@needs_fixture
@pytest.mark.parametrize("case", ["", "caseB."])
def test_fixture_parity_through_from_official(official, case):
    from safetensors.torch import load_file

    io = load_file(str(IO))
    x, bandwidth = io[case + "input_audio"], io[case + "bandwidth_id"]
    with torch.inference_mode():
        tokens = official.encode(x)
        latents = official.encoder(x[:, None])
        audio = official.decode(tokens, bandwidth_id=bandwidth)
    torch.testing.assert_close(latents, io[case + "pre_quant_features"], atol=1e-4, rtol=1e-4)
    with torch.inference_mode():  # the CPU inference fast path (time-major, channels-last) computes the same
        fast = official.encoder.forward_time_major(x).transpose(1, 2)
    torch.testing.assert_close(fast, latents, atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens.ids, io[case + "codes"][0])
    assert audio.shape == x.shape  # the official output is N * hop long; ours is trimmed to the input
    torch.testing.assert_close(audio, io[case + "output_audio"][:, : x.shape[-1]], atol=1e-4, rtol=0)


@needs_fixture
def test_converter_infers_shrunk_widths_and_works_without_yaml():
    model = zoo.from_official("wavtokenizer", CKPT)
    assert (model.config["n_filters"], model.config["latent_dim"], model.config["codebook_size"]) == (4, 40, 256)
    assert model.config["encoder_strides"] == [2, 4, 5, 8] and model.hop_length == 320
    assert (model.config["dim"], model.config["num_layers"], model.config["n_fft"]) == (64, 2, 1280)


def _resaved(tmp_path: Path, edit) -> Path:
    ckpt = torch.load(CKPT, map_location="cpu", weights_only=True)
    edit(ckpt["state_dict"])
    path = tmp_path / "edited.ckpt"
    torch.save(ckpt, path)
    return path


@needs_fixture
def test_converter_refuses_unknown_keys_with_a_list(tmp_path):
    def foreign_module(state):
        state["text_encoder.weight"] = torch.zeros(3)

    def extra_generator_key(state):
        state["backbone.convnext.0.extra_gate"] = torch.zeros(3)

    with pytest.raises(ValueError, match=r"1 keys of unknown modules: \['text_encoder.weight'\]"):
        zoo.from_official("wavtokenizer", _resaved(tmp_path, foreign_module))
    with pytest.raises(ValueError, match=r"unknown keys \(1\): \['backbone.convnext.0.extra_gate'\]"):
        zoo.from_official("wavtokenizer", _resaved(tmp_path, extra_generator_key))


@needs_fixture
def test_converter_refuses_missing_keys_with_a_list(tmp_path):
    def drop(state):
        del state["backbone.pos_net.2.k.bias"]
        del state["backbone.final_layer_norm.weight"]

    with pytest.raises(ValueError, match=r"missing keys \(2\).*final_layer_norm.weight.*pos_net.2.attn.k.bias"):
        zoo.from_official("wavtokenizer", _resaved(tmp_path, drop))


@needs_fixture
def test_converter_refuses_a_yaml_that_does_not_fit_the_checkpoint():
    import yaml

    config = yaml.safe_load(YAML.read_text())
    config["model"]["init_args"]["feature_extractor"]["init_args"]["vq_bins"] = 4096
    config["model"]["init_args"]["head"]["init_args"]["hop_length"] = 600
    with pytest.raises(ValueError, match=r"vq_bins: yaml 4096, checkpoint 256(.|\n)*hop_length: yaml 600"):
        zoo.from_official("wavtokenizer", CKPT, config=config)


# ---------------------------------------------------------------------------------------------- batching

def test_padded_batch_equals_one_clip_at_a_time(tiny):
    lengths = [16123, 700, 9600, 5, 6400]  # not multiples of the hop, one shorter than a frame, one shorter than pads
    clips = [_clip(n, seed=10 + i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(clips), max(lengths))
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    with torch.inference_mode():
        tokens = tiny.encode(batch, lengths=lengths)
        audio = tiny.decode(tokens)
        assert tokens.lengths.tolist() == [-(-n // 320) for n in lengths]
        assert audio.shape == (len(lengths), max(lengths))
        for i, clip in enumerate(clips):
            alone = tiny.encode(clip[None])
            n = int(tokens.lengths[i])
            assert torch.equal(tokens.ids[i, :n], alone.ids[0]), f"ids differ for clip {i}"
            assert (tokens.ids[i, n:] == 0).all()
            torch.testing.assert_close(audio[i, : len(clip)], tiny.decode(alone)[0], atol=1e-5, rtol=0)
            assert (audio[i, len(clip):] == 0).all()
    # rows come back alone through Tokens indexing too
    with torch.inference_mode():
        torch.testing.assert_close(tiny.decode(tokens[1])[0], audio[1, : lengths[1]], atol=1e-5, rtol=0)


def test_batched_ragged_encoder_pads_each_clip_at_its_own_end(tiny):
    """The one-gather-per-layer path (training, GPU) against clips run alone (CPU inference runs clips one by one)."""
    lengths = torch.tensor([5000, 333, 4801, 2])
    batch = torch.zeros(4, 1, 5000)
    for i, n in enumerate(lengths.tolist()):
        batch[i, 0, :n] = _clip(n, seed=30 + i)
    with torch.inference_mode():
        z = tiny.encoder(batch, lengths)
        frames = tiny.encoder.output_lengths(lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = tiny.encoder(batch[i:i + 1, :, :n])
            assert alone.shape[-1] == frames[i]
            torch.testing.assert_close(z[i, :, : frames[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_equal_length_batch_matches_the_official_unpadded_path(tiny):
    x = torch.stack([_clip(4000, 1), _clip(4000, 2)])
    with torch.inference_mode():
        a = tiny.encode(x)
        b = tiny.encode(x, lengths=[4000, 4000])
    assert a.lengths is None and b.lengths is None and torch.equal(a.ids, b.ids)


# ---------------------------------------------------------------------------------------------- rates and lengths

def test_any_input_rate_is_resampled_and_decoded_back(tiny):
    import torchaudio.functional as AF

    x16 = _clip(16000 * 7 // 10, 3)[None] * 0.9
    with torch.inference_mode():
        tokens = tiny.encode(x16, sample_rate=16000)
        direct = tiny.encode(AF.resample(x16, 16000, 24000))
        back = tiny.decode(tokens, sample_rate=16000)
        native = tiny.decode(tokens)
    assert torch.equal(tokens.ids, direct.ids)
    assert tokens.meta["num_samples"].tolist() == [16800] and tokens.ids.shape[1] == 53
    assert native.shape == (1, 16800) and back.shape == (1, x16.shape[-1])


def test_decode_is_trimmed_to_the_input_length(tiny):
    for n in (1, 319, 321, 4801):
        with torch.inference_mode():
            tokens = tiny.encode(_clip(n, n)[None])
            audio = tiny.decode(tokens)
        assert tokens.ids.shape == (1, -(-n // 320)) and audio.shape == (1, n)
    # tokens without num_samples (e.g. generated by an LM) decode to N * hop samples
    bare = zoo.Tokens(tokens.ids, layout=tokens.layout)
    with torch.inference_mode():
        assert tiny.decode(bare).shape == (1, tokens.ids.shape[1] * 320)


# ---------------------------------------------------------------------------------------------- bandwidth_id

def test_bandwidth_id_selects_the_adaln_row(tiny):
    x = torch.stack([_clip(3200, 5), _clip(3200, 6)])
    with torch.inference_mode():
        tokens = tiny.encode(x)
        default = tiny.decode(tokens)
        rows = [tiny.decode(tokens, bandwidth_id=i) for i in range(4)]
        mixed = tiny.decode(tokens, bandwidth_id=torch.tensor([2, 0]))
    assert torch.equal(default, rows[0])
    assert not torch.allclose(rows[0], rows[3])
    torch.testing.assert_close(mixed[0], rows[2][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], rows[0][1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"bandwidth_id must lie in \[0, 4\)"):
        tiny.decode(tokens, bandwidth_id=4)
    with pytest.raises(ValueError, match="1 or B=2"):
        tiny.decode(tokens, bandwidth_id=torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------------------------------------- training pass

def test_forward_returns_losses_stats_and_target():
    torch.manual_seed(0)
    model = WavTokenizer(**TINY).train()
    x = torch.stack([_clip(4000, 7), _clip(4000, 8)])
    out = model(x, lengths=[4000, 2500])
    assert isinstance(out, ForwardOutput)
    assert out.reconstruction.shape == x.shape and set(out.losses) == {"commitment"}
    assert {"usage", "perplexity"} <= set(out.stats)
    assert torch.equal(out.extras["target"], x) and out.extras["lengths"].tolist() == [4000, 2500]
    assert out.tokens.lengths.tolist() == [13, 8]
    assert bool(model.quantizer.inited.item())  # k-means ran on the first training batch (valid frames only)
    (out.reconstruction.square().mean() + out.losses["commitment"]).backward()
    assert model.encoder.conv_in.conv.weight_v.grad is not None


def test_objective_weights_mel_commitment_and_the_conditioned_discriminators():
    from zoo.train.objectives import build_objective

    torch.manual_seed(0)
    model = WavTokenizer(**TINY).train()
    objective = build_objective("wavtokenizer", mpd_weight=0.0, mrd_weight=2.0, mrd_channels=8, disc_start=1)
    objective.setup(model)
    assert objective.discriminator.mpd is None and objective.discriminator.dac is None
    assert objective.discriminator.mrd.discriminators[0].emb.num_embeddings == 4  # conditioned on the AdaLN row
    x = torch.stack([_clip(6400, 40), _clip(6400, 41)])
    loss, terms = objective.generator_loss(model, x, step=0)  # before disc_start: mel + commitment only
    torch.testing.assert_close(loss, 45 * terms["mel"] + 1000 * terms["commitment"])
    objective.discriminator.requires_grad_(False)  # as the engine does for the generator step
    loss, terms = objective.generator_loss(model, {"audio": x, "lengths": torch.tensor([6400, 3000])}, step=1)
    objective.discriminator.requires_grad_(True)
    expected = 45 * terms["mel"] + 1000 * terms["commitment"] + 2 * (terms["mrd_gen"] + terms["mrd_fm"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.head.out.weight.grad is not None
    d_loss, d_terms = objective.discriminator_loss(model, x, step=1)
    torch.testing.assert_close(d_loss, 2 * d_terms["mrd_disc"])
    d_loss.backward()
    assert all(p.grad is not None for p in objective.discriminator.mrd.parameters() if p.requires_grad)


def test_objective_adds_the_multiresolution_mel_term_only_when_weighted():
    from zoo.losses import MultiResolutionMelLoss
    from zoo.train.objectives import build_objective

    torch.manual_seed(0)
    model = WavTokenizer(**TINY).train()
    x = torch.stack([_clip(6400, 40), _clip(6400, 41)])
    plain = build_objective("wavtokenizer", mpd_weight=0.0, mrd_weight=0.0)
    plain.setup(model)
    _, terms = plain.generator_loss(model, x, step=0)
    assert "multires_mel" not in terms and plain.multires_mel is None
    objective = build_objective("wavtokenizer", mpd_weight=0.0, mrd_weight=0.0, multires_mel_weight=15.0)
    objective.setup(model)
    loss, terms = objective.generator_loss(model, x, step=0)
    torch.testing.assert_close(loss, 45 * terms["mel"] + 1000 * terms["commitment"] + 15 * terms["multires_mel"])
    assert float(terms["multires_mel"]) > 0
    model.zero_grad()
    terms["multires_mel"].backward()
    assert model.head.out.weight.grad.abs().sum() > 0  # the term trains the decoder
    assert isinstance(objective.multires_mel, MultiResolutionMelLoss)
    with pytest.raises(ValueError, match="multires_mel_weight"):
        build_objective("wavtokenizer", multires_mel_weight=-1.0)


# ---------------------------------------------------------------------------------------------- long audio

def _long_speech(repeats: int) -> torch.Tensor:
    """The bundled speech clip repeated at changing levels: `repeats` x 3.6 s of real speech."""
    from zoo.data.samples import sample_audio

    wav, _ = sample_audio(sample_rate=24000)
    gains = (1.0, 0.5, 0.8, 0.3, 0.9, 0.6)
    return torch.cat([wav * gains[i % len(gains)] for i in range(repeats)], dim=-1)


def test_long_audio_runs_in_chunks_of_bounded_size_and_matches_the_whole_clip(monkeypatch):
    """A 14 s clip with 2 s chunks and 1 s context: no encoder or decoder call sees more than 4 s (the memory bound),
    the ids equal the whole-clip ids, and the decoded audio matches the whole-clip decode (>= 15 dB SNR between
    them) and is as close to the input (mel distance) as the whole-clip decode is."""
    from zoo.metrics.audio import mel_distance

    tok = zoo.load("wavtokenizer-tiny")  # the bundled weights, trained on speech
    tok.chunk_context_seconds = 1.0
    x = _long_speech(4)[:, : 24000 * 14]
    longest = {"encoder": 0, "decoder": 0}
    clip, latents = tok._encode_clip, tok.decode_latents

    def spy_encoder(segment):
        longest["encoder"] = max(longest["encoder"], segment.shape[-1])
        return clip(segment)

    def spy_decoder(z, *args, **kwargs):
        chunking = kwargs.get("chunk_seconds", args[2] if len(args) > 2 else None)
        if not chunking:  # a call that decodes `z` in one piece
            longest["decoder"] = max(longest["decoder"], z.shape[1] * tok.hop_length)
        return latents(z, *args, **kwargs)

    with torch.inference_mode():
        whole = tok.encode(x, chunk_seconds=None)
        audio_whole = tok.decode(whole, chunk_seconds=None)
        monkeypatch.setattr(tok, "_encode_clip", spy_encoder)
        monkeypatch.setattr(tok, "decode_latents", spy_decoder)
        chunked = tok.encode(x, chunk_seconds=2.0)
        audio = tok.decode(chunked, chunk_seconds=2.0)
    bound = (2.0 + 2 * 1.0) * 24000 + 2 * tok.hop_length  # window rounding to frames
    assert 0 < longest["encoder"] <= bound and 0 < longest["decoder"] <= bound, longest
    assert torch.equal(chunked.ids, whole.ids)
    assert audio.shape == audio_whole.shape == x.shape
    snr = 10 * torch.log10(audio_whole.square().sum() / (audio - audio_whole).square().sum())
    assert snr > 15, f"chunked decode differs from the whole-clip decode: {snr:.1f} dB"
    mel_whole = float(mel_distance(x, audio_whole, 24000)[0])
    mel_chunked = float(mel_distance(x, audio, 24000)[0])
    assert abs(mel_chunked - mel_whole) < 0.02 * mel_whole, (mel_chunked, mel_whole)


def test_clips_within_a_chunk_are_not_chunked_and_ragged_rows_decide_alone(tiny):
    """Default 30 s chunks leave every usual clip untouched (the fast paths and the official parity above); in a
    ragged batch each row is chunked or not by its own length, so a row's ids never depend on its batch."""
    tiny.chunk_context_seconds = 0.05
    try:
        short, long = _clip(4000, 5), _clip(24000, 6)
        batch = torch.zeros(2, 24000)
        batch[0, :4000], batch[1] = short, long
        with torch.inference_mode():
            together = tiny.encode(batch, lengths=[4000, 24000], chunk_seconds=0.2)
            alone_short = tiny.encode(short[None], chunk_seconds=0.2)
            alone_long = tiny.encode(long[None], chunk_seconds=0.2)
            default = tiny.encode(long[None])
            whole = tiny.encode(long[None], chunk_seconds=None)
            audio = tiny.decode(together, chunk_seconds=0.2)
            audio_short = tiny.decode(alone_short, chunk_seconds=0.2)
        assert torch.equal(together.ids[0, :13], alone_short.ids[0])
        assert torch.equal(together.ids[1], alone_long.ids[0])
        assert torch.equal(default.ids, whole.ids)
        torch.testing.assert_close(audio[0, :4000], audio_short[0], atol=1e-5, rtol=0)
        assert (audio[0, 4000:] == 0).all()
        for bad in (0, -1.0, float("nan"), "30"):
            with pytest.raises((ValueError, TypeError), match="chunk_seconds"):
                tiny.encode(short[None], chunk_seconds=bad)
    finally:
        tiny.chunk_context_seconds = WavTokenizer.chunk_context_seconds

"""The one image reader and the one audio reader (`zoo.io`): every common format read correctly or refused by name."""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from zoo.io import load_audio, open_image, read_audio, read_image, resample


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _as_array(path: Path) -> np.ndarray:
    return (read_image(path)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16_rgb(path: Path, values: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
                     + _png_chunk(b"IEND", b""))
    return path


# -- images -----------------------------------------------------------------------------------------------------------


def test_sixteen_bit_images_keep_their_values(tmp_path):
    grey = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)  # up to 57300 of 65535
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    got = _as_array(tmp_path / "grey16.png")
    expected = np.round(grey / 257).astype(np.uint8)
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 0], got[..., 2])
    assert got.mean() < 120  # the old reader saturated these to white (255)

    rgb16 = np.random.default_rng(1).integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    got = _as_array(_png16_rgb(tmp_path / "rgb16.png", rgb16))
    assert np.abs(got.astype(int) - np.round(rgb16 / 257).astype(int)).max() <= 1

    Image.fromarray(grey).save(tmp_path / "grey16.tif")
    assert np.array_equal(_as_array(tmp_path / "grey16.tif")[..., 1], expected)


def test_palette_grey_alpha_and_bilevel_images(tmp_path):
    rgb = _rgb()
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "p.png")
    assert np.array_equal(_as_array(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))

    transparent = palette.copy()
    transparent.info["transparency"] = int(np.asarray(palette)[0, 0])
    transparent.save(tmp_path / "p_alpha.png", transparency=transparent.info["transparency"])
    got = _as_array(tmp_path / "p_alpha.png")
    assert (got[0, 0] == 255).all()  # the transparent palette entry shows the white background

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:3, :3, 3] = 0
    rgba[5, 5, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = _as_array(tmp_path / "rgba.png")
    assert (got[:3, :3] == 255).all() and np.array_equal(got[6:, 6:], rgb[6:, 6:])
    assert np.abs(got[5, 5].astype(int) - (rgb[5, 5].astype(int) * 128 + 255 * 127) / 255).max() <= 1
    black = read_image(tmp_path / "rgba.png", background=(0, 0, 0))
    assert (black[0, :, :3, :3] == 0).all()

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert np.array_equal(_as_array(tmp_path / "l.png"), np.stack([grey] * 3, -1))
    Image.fromarray(np.dstack([grey, np.zeros_like(grey)]), "LA").save(tmp_path / "la.png")
    assert (_as_array(tmp_path / "la.png") == 255).all()
    Image.fromarray(grey > 127).save(tmp_path / "bits.png")
    assert set(np.unique(_as_array(tmp_path / "bits.png"))) <= {0, 255}


def test_cmyk_exif_orientation_and_first_frame(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:32] = (30, 200, 30)
    rgb[:, 32:] = (30, 30, 200)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    got = _as_array(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(got[4:-4, 4:12] - rgb[4:-4, 4:12]).max() < 12  # colours survive (not inverted)

    photo = _rgb(10, 20)  # stored landscape, EXIF says "rotate 90 clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(tmp_path / "rotated.png", exif=exif)
    upright = read_image(tmp_path / "rotated.png")
    assert upright.shape == (1, 3, 20, 10)
    assert np.array_equal(_as_array(tmp_path / "rotated.png"), np.rot90(photo, k=-1))

    frames = [Image.fromarray(_rgb(8, 8, seed)).quantize(8) for seed in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.array_equal(_as_array(tmp_path / "anim.gif"), np.asarray(frames[0].convert("RGB")))


def test_float_and_32_bit_images(tmp_path):
    values = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    assert np.array_equal(_as_array(tmp_path / "f.tif")[..., 0], np.round(values * 255).astype(np.uint8))
    Image.fromarray(values * 4, "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"hdr.tif has float pixels .* in \[0, 4\]"):
        read_image(tmp_path / "hdr.tif")
    Image.fromarray((values * 1e6).astype(np.int32), "I").save(tmp_path / "i32.tif")
    with pytest.raises(ValueError, match=r"i32.tif has 32-bit integer pixels"):
        read_image(tmp_path / "i32.tif")


def test_unreadable_images_are_refused_by_name(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:300])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("cut.png", "text.jpg", "empty.png"):
        with pytest.raises(ValueError, match=rf"cannot read .*{name} as an image"):
            read_image(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    buffer = io.BytesIO((tmp_path / "full.png").read_bytes())
    assert open_image(buffer).size == (64, 64)  # open files (and tar members) go through the same reader


def test_datasets_and_the_cli_reader_agree_on_a_16_bit_png(tmp_path):
    from zoo.data import ImageFolder

    grey = (np.random.default_rng(2).random((40, 40)) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    item = ImageFolder(tmp_path, image_size=40, crop="center")[0]
    torch.testing.assert_close(item, read_image(tmp_path / "a.png")[0], atol=0, rtol=0)


# -- audio ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype,step", [("PCM_U8", 2 ** -7), ("PCM_16", 2 ** -15), ("PCM_24", 2 ** -23),
                                          ("PCM_32", 2 ** -31), ("FLOAT", 1e-7), ("DOUBLE", 1e-7)])
def test_pcm_and_float_wavs_read_to_the_same_signal(tmp_path, subtype, step):
    t = np.arange(4410) / 44100
    signal = 0.8 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(tmp_path / "x.wav"), signal, 44100, subtype=subtype)
    wav, rate = read_audio(tmp_path / "x.wav")
    assert rate == 44100 and wav.shape == (1, 4410) and wav.dtype == torch.float32
    assert np.abs(wav[0].numpy() - signal).max() <= step + 1e-7


def test_multichannel_any_rate_and_rate_bounds(tmp_path):
    left, right = np.full(800, 0.5), np.full(800, -0.1)
    sf.write(str(tmp_path / "stereo.flac"), np.stack([left, right, right * 0], axis=1), 11025)
    wav, rate = read_audio(tmp_path / "stereo.flac")
    assert rate == 11025 and torch.allclose(wav, torch.full((1, 800), 0.4 / 3), atol=1e-4)
    for rate in (8000, 22050, 96000, 192000):
        sf.write(str(tmp_path / f"r{rate}.wav"), np.zeros(64), rate)
        assert read_audio(tmp_path / f"r{rate}.wav")[1] == rate
    sf.write(str(tmp_path / "one_hz.wav"), np.zeros(100_000, np.float32), 1, subtype="FLOAT")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"one_hz.wav's sample rate must lie in \[1000, 768000\] Hz, got 1"):
        read_audio(tmp_path / "one_hz.wav")
    assert time.perf_counter() - start < 1  # refused before any sample is decoded
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read .*empty.wav as audio"):
        read_audio(tmp_path / "empty.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros((0, 1)), 16000)
    with pytest.raises(ValueError, match=r"silent.wav contains no audio samples"):
        read_audio(tmp_path / "silent.wav")


def test_float_audio_beyond_full_scale_follows_the_documented_rule(tmp_path):
    x = np.array([0.1, -1.6, 0.8, 2.0], np.float32)
    sf.write(str(tmp_path / "hot.wav"), x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"hot.wav is FLOAT audio with a peak of 2 \(\+6.02 dBFS\), above full scale"):
        read_audio(tmp_path / "hot.wav")
    with pytest.warns(UserWarning, match="scaled by 1/2"):
        wav, _ = read_audio(tmp_path / "hot.wav", over_full_scale="normalize")
    assert torch.allclose(wav[0], torch.tensor(x / 2.0))
    with pytest.warns(UserWarning, match="clipped"):
        wav, _ = read_audio(tmp_path / "hot.wav", over_full_scale="clip")
    assert torch.equal(wav[0], torch.tensor(x).clamp(-1, 1))
    sf.write(str(tmp_path / "edge.wav"), np.array([1.0005, -0.5], np.float32), 16000, subtype="FLOAT")
    assert read_audio(tmp_path / "edge.wav")[0].max() == 1.0  # within the 1e-3 tolerance: clamped, no error
    sf.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav holds NaN or infinite samples"):
        read_audio(tmp_path / "nan.wav")
    with pytest.raises(ValueError, match="over_full_scale must be one of"):
        read_audio(tmp_path / "hot.wav", over_full_scale="ignore")


def test_windows_and_streams_use_the_same_reader(tmp_path):
    from zoo.data import AudioFolder

    sf.write(str(tmp_path / "a.wav"), np.linspace(-0.5, 0.5, 1000), 16000, subtype="FLOAT")
    window, rate = load_audio(tmp_path / "a.wav", start=100, frames=50)
    assert rate == 16000 and torch.allclose(window, torch.linspace(-0.5, 0.5, 1000)[100:150].float(), atol=1e-6)
    stream, _ = load_audio(io.BytesIO((tmp_path / "a.wav").read_bytes()))
    assert stream.shape == (1000,)
    sf.write(str(tmp_path / "b.wav"), np.full(1000, 3.0), 16000, subtype="FLOAT")
    keep_level = AudioFolder(tmp_path, sample_rate=16000, num_samples=None, gain_db=None, files=[tmp_path / "b.wav"])
    with pytest.raises(Exception, match="above full scale"):
        keep_level[0]
    levelled = AudioFolder(tmp_path, sample_rate=16000, num_samples=None, gain_db=-6.0, files=[tmp_path / "b.wav"])
    assert levelled[0].abs().max().item() == pytest.approx(10 ** (-6 / 20), rel=1e-5)


def test_resampling_odd_rates_in_bounded_time_and_memory():
    """44101 -> 24000 Hz: torchaudio's kernel would be 24000 x 44125 values (4 GiB, minutes); the polyphase path
    gives a correct band-limited result in well under a second."""
    rate, new = 44101, 24000
    t = torch.arange(rate) / rate
    x = torch.sin(2 * math.pi * 440 * t)[None]
    start = time.perf_counter()
    y = resample(x, rate, new)
    assert time.perf_counter() - start < 5
    assert y.shape == (1, math.ceil(rate * new / rate)) and y.dtype == torch.float32
    expected = torch.sin(2 * math.pi * 440 * torch.arange(y.shape[-1]) / new)
    assert (y[0, 200:-200] - expected[200:-200]).abs().max() < 1e-3
    common = resample(x, 44100, 24000)  # common pairs keep torchaudio's resampler (the official preprocessing)
    import torchaudio.functional as AF

    torch.testing.assert_close(common, AF.resample(x, 44100, 24000))
    with pytest.raises(ValueError, match="source sample rate must lie in"):
        resample(x, 1, 24000)

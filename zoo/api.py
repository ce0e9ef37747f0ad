"""The public contract: `Tokenizer` (encode -> `Tokens`, decode -> signal), `Codebook`, `ForwardOutput`.

Every family's `encode`, `decode` and `embed` pass one door (`Tokenizer.__init_subclass__` wraps them): arguments
bound (unknown ones are a TypeError naming the method), the shared keyword words checked (`generator`, `steps`,
`guidance`, `sample_rate`, `num_tokens`, `target_error`, `noise`), tokens checked before decode/embed, encoded
tokens marked with their maker (`meta["tokenizer"]`), and every `check_input` ends in the dtype policy of
`zoo.checks` (any float dtype converted to the model's; integers refused). See docs/reliability.md.

Every family subclasses one of `ImageTokenizer`, `AudioTokenizer` or `FaceTokenizer`, takes plain typed keyword
arguments (recorded in `self.config`, so `save_pretrained` / `zoo.load` rebuild it), and implements `encode`,
`decode`, `embed`, `codebooks` and the training `forward`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from zoo.checks import check_audio, check_image, check_sample_rate
from zoo.precision import check_precision, precision_context, to_fp32
from zoo.tokens import Tokens

__all__ = [
    "AudioTokenizer",
    "Codebook",
    "FaceTokenizer",
    "ForwardOutput",
    "ImageTokenizer",
    "Tokenizer",
    "Tokens",
    "accepts_option",
]


def accepts_option(fn: Any, name: str) -> bool:
    """Whether `fn` (e.g. a tokenizer's `encode` or `decode`) takes the keyword `name`, by name or through `**kwargs`.
    The command line and `zoo eval` use it to refuse an option (`--num-tokens`, `--steps`, ...) that a model lacks
    before any input is read."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class Codebook:
    """A read-only view of one quantiser's code table (explicit or implicit, e.g. FSQ)."""

    def __init__(self, quantizer: nn.Module, name: str = "codebook") -> None:
        self.quantizer = quantizer
        self.name = name

    @property
    def size(self) -> int:
        return int(self.quantizer.codebook_size)

    @property
    def dim(self) -> int:
        return int(self.quantizer.dim)

    def embeddings(self) -> torch.Tensor:
        """`[size, dim]` code vectors."""
        return self.quantizer.embeddings()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids `[...]` -> code vectors `[..., dim]` (differentiable w.r.t. the codebook)."""
        return self.quantizer.lookup(ids)

    def neighbors(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """ids `[...]` -> `[..., k]` ids of the k nearest codes (the id itself first)."""
        return self.quantizer.neighbors(ids, k)

    def __repr__(self) -> str:
        return f"Codebook(name={self.name!r}, size={self.size}, dim={self.dim})"


@dataclass
class ForwardOutput:
    """What every tokenizer's training `forward` returns.

    Attributes:
        reconstruction: the decoded signal in the decode convention (images in [0, 1] scale, unclamped).
        tokens: the ids of this pass (None when a family cannot form them cheaply during training).
        losses: unweighted scalar auxiliary losses by name (e.g. "commitment", "codebook", "flow").
        stats: scalar diagnostics (e.g. "usage", "perplexity").
        extras: tensors objectives may need (e.g. "decoder_features" for semantic regularisation, "target").
    """

    reconstruction: torch.Tensor | None
    tokens: Tokens | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def _record_config(init):
    """Wrap a subclass `__init__` so the outermost call stores its bound keyword arguments in `self.config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        depth = self.__dict__.get("_config_depth", 0)
        object.__setattr__(self, "_config_depth", depth + 1)
        try:
            init(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_config_depth", depth)
        if depth == 0:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = dict(bound.arguments)
            config.pop(next(iter(signature.parameters)))
            for name, param in signature.parameters.items():
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(config.pop(name, {}))
                elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                    config.pop(name, None)
            object.__setattr__(self, "config", config)

    return wrapper


MAKER_KEY = "tokenizer"  # Tokens.meta key naming the tokenizer that encoded them (registry name, else family)


def _check_number_or_list(value: Any, name: str, integer: bool) -> None:
    """num_tokens / target_error: a number, a sequence of numbers or a tensor of them (ranges: the family's)."""
    from numbers import Integral, Real

    kind = "int" if integer else "number"
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool or (integer and value.is_floating_point()):
            raise TypeError(f"{name} must be an {kind} or a tensor of them, got a {value.dtype} tensor")
        if value.dim() > 1 or value.numel() == 0:
            raise ValueError(f"{name} must be one value or one per item, got a tensor of shape {tuple(value.shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite, got {value.tolist()}")
        return
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name} must be one value or one per item, got an empty {type(value).__name__}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, Integral if integer else Real):
            raise TypeError(f"{name} must be an {kind} or a list of them, got {value!r}")
        if not integer and not math.isfinite(item):
            raise ValueError(f"{name} must be finite, got {value!r}")


def _check_common_kwargs(arguments: dict[str, Any]) -> None:
    """Type and range checks of the keyword words every family shares (docs: DESIGN, "the same words everywhere")."""
    from zoo.checks import check_finite_number, check_positive_int

    if arguments.get("generator") is not None and not isinstance(arguments["generator"], torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (torch.Generator().manual_seed(0)), got "
                        f"{type(arguments['generator']).__name__}")
    if arguments.get("steps") is not None:
        check_positive_int(arguments["steps"], "steps")
    guidance = arguments.get("guidance")
    if guidance is not None and not callable(guidance):
        check_finite_number(guidance, "guidance")
    if arguments.get("sample_rate") is not None:
        check_sample_rate(arguments["sample_rate"])
    if arguments.get("num_tokens") is not None:
        _check_number_or_list(arguments["num_tokens"], "num_tokens", integer=True)
    if arguments.get("target_error") is not None:
        _check_number_or_list(arguments["target_error"], "target_error", integer=False)
    if arguments.get("noise") is not None and not isinstance(arguments["noise"], torch.Tensor):
        raise TypeError(f"noise must be a torch.Tensor, got {type(arguments['noise']).__name__}")


def _checked_call(method, tokens_first: bool):
    """Wrap a family's encode / decode / embed: bind the arguments (a TypeError for unknown or missing ones), check
    the shared keyword words, and for decode / embed check the tokens (`Tokenizer.check_tokens`) first."""
    signature = inspect.signature(method)
    first = list(signature.parameters)[1] if len(signature.parameters) > 1 else None

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__}.{method.__name__}: {err}") from None
        _check_common_kwargs(bound.arguments)
        if tokens_first and first is not None:
            self.check_tokens(bound.arguments.get(first))
        if method.__name__ in ("encode", "decode") and self.precision != "fp32":
            # reduced precision: the heavy layers under autocast, the marked fp32 blocks and the outputs in fp32
            with precision_context(self.precision, self.device):
                out = method(self, *args, **kwargs)
            if isinstance(out, Tokens):
                out.meta = to_fp32(out.meta)
            else:
                out = to_fp32(out)
        else:
            out = method(self, *args, **kwargs)
        if not tokens_first and isinstance(out, Tokens) and MAKER_KEY not in out.meta:
            out.meta[MAKER_KEY] = self.name or self.family  # decode refuses the tokens in another tokenizer
        return out

    return wrapper


def _to_model_dtype(check):
    """Wrap a `check_input` so that the checked floating-point tensor it returns is converted to the model's dtype
    and device (the dtype policy of `zoo.checks`, whatever the family's own checks do)."""

    @functools.wraps(check)
    def wrapper(self, x, *args, **kwargs):
        out = check(self, x, *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.to(device=self.device, dtype=self.dtype)
        return out

    return wrapper


class Tokenizer(nn.Module):
    """Base class of every tokenizer. See the module docstring and `docs/index.md`."""

    family: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    # fnmatch patterns of parameters that legitimately receive no gradient in `forward` (checked by the tests)
    unused_in_forward: ClassVar[tuple[str, ...]] = ()

    name: str | None = None  # registry name when built through the registry
    weights_tag: str | None = None  # the weights tag, or the resolved path of a weights file (None: random init)
    _precision: str = "fp32"

    @property
    def precision(self) -> str:
        """Inference precision of `encode` / `decode`: "fp32" (default), "bf16" or "fp16" (`zoo.precision`)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_config(cls.__dict__["__init__"])
        if "check_input" in cls.__dict__:  # a family's own checks still end in the one dtype policy
            cls.check_input = _to_model_dtype(cls.__dict__["check_input"])
        for method in ("encode", "decode", "embed"):  # the shared keyword words are checked at the one door
            if method in cls.__dict__:
                setattr(cls, method, _checked_call(cls.__dict__[method], tokens_first=method != "encode"))

    # -- to implement ------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, **kwargs) -> Tokens:
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement decode")

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> code embeddings (differentiable), `[B, N, D]` (or `[B, N, K, D]`)."""
        self.check_tokens(tokens)
        books = self.codebooks
        if tokens.ids.dim() == 3 and len(books) == tokens.ids.shape[-1]:
            return torch.stack([book.lookup(tokens.ids[..., i]) for i, book in enumerate(books)], dim=-2)
        return books[0].lookup(tokens.ids)

    @property
    def codebooks(self) -> list[Codebook]:
        raise NotImplementedError(f"{type(self).__name__} must implement the codebooks property")

    # -- provided ----------------------------------------------------------------------------------------------
    @property
    def codebook(self) -> Codebook:
        """The (first) codebook; tokenizers with several expose all of them as `.codebooks`."""
        return self.codebooks[0]

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the weights (inputs are converted to it at the door)."""
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def example_input(self, batch_size: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _made_here(self, maker: str) -> bool:
        """Whether tokens marked `maker` (a registry name or a family) are this tokenizer's: the same name, the same
        family, or, for an unnamed model (e.g. from `zoo.from_official`), a registered variant of its family."""
        if maker in (self.name, self.family):
            return True
        if self.name is None:
            from zoo.registry import get_spec

            try:
                return get_spec(maker).family == self.family
            except KeyError:
                return False
        return False

    def check_tokens(self, tokens: object) -> Tokens:
        """Raise a clear error unless `tokens` is a `Tokens` whose ids fit this tokenizer's codebooks."""
        if not isinstance(tokens, Tokens):
            raise TypeError(f"decode expects zoo.Tokens (from encode or Tokens.load), got {type(tokens).__name__}")
        maker = tokens.meta.get(MAKER_KEY)
        if isinstance(maker, str) and not self._made_here(maker):
            raise ValueError(
                f"these tokens were made by {maker}, not by {self.name or self.family} ({type(self).__name__}); "
                f"decode them with that tokenizer (zoo.load({maker!r})). If they really fit this one (e.g. a renamed "
                f"copy), drop the mark first: tokens.meta.pop({MAKER_KEY!r})"
            )
        ids = tokens.ids
        if ids.shape[0] == 0:
            raise ValueError(f"the tokens hold an empty batch (ids of shape {tuple(ids.shape)}); nothing to decode")
        if ids.shape[1] == 0 or (ids.dim() == 3 and ids.shape[2] == 0):
            raise ValueError(f"the tokens hold no ids (shape {tuple(ids.shape)}); encode something first")
        sizes = [book.size for book in self.codebooks]
        if ids.dim() == 3 and len(sizes) not in (1, ids.shape[-1]):
            raise ValueError(
                f"ids have K={ids.shape[-1]} parallel codes but {type(self).__name__} has {len(sizes)} codebooks"
            )
        valid = tokens.valid_mask()
        columns = [ids] if ids.dim() == 2 else [ids[..., k] for k in range(ids.shape[-1])]
        for k, column in enumerate(columns):
            size = sizes[k] if len(sizes) > 1 else sizes[0]
            checked = column[valid]
            if checked.numel() == 0:
                continue
            bad = (checked < 0) | (checked >= size)
            if bad.any():
                where = (valid & ((column < 0) | (column >= size))).nonzero()[0].tolist()
                raise ValueError(
                    f"token ids must lie in [0, {size}) for codebook {k} of {type(self).__name__}; got "
                    f"{column[tuple(where)].item()} at (batch, position) {tuple(where)}. Were these tokens made by "
                    "another tokenizer?"
                )
        return tokens

    def reconstruct(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """encode -> decode. Keyword args go to whichever of encode/decode accepts them."""
        encode_params = inspect.signature(self.encode).parameters
        enc = {k: v for k, v in kwargs.items() if k in encode_params}
        dec = {k: v for k, v in kwargs.items() if k not in encode_params}
        with torch.inference_mode():
            return self.decode(self.encode(x, **enc), **dec)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` (family + constructor kwargs) and `model.safetensors`; `zoo.load(directory)` reads it."""
        from safetensors.torch import save_model

        from zoo import __version__
        from zoo.atomic import atomic_path, atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": "zoo.tokenizer/1",
            "zoo_version": __version__,
            "family": self.family,
            "name": self.name,
            "kwargs": self.config,
        }
        try:
            text = json.dumps(config, indent=2)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__} constructor kwargs must be JSON-able to save: {err}") from None
        # each file is written to a temporary name and renamed; the weights go first and config.json (what
        # zoo.load looks for) last, so a folder interrupted mid-save never pairs a new config with missing weights
        with atomic_path(directory / "model.safetensors") as tmp:
            save_model(self, str(tmp))
        atomic_write_text(directory / "config.json", text + "\n")
        return directory

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


class ImageTokenizer(Tokenizer):
    """Images: float `[B, 3, H, W]` RGB in [0, 1] at `image_size`; `decode` returns the same convention."""

    modality: ClassVar[str] = "image"
    image_size: int | tuple[int, int] = 256

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def check_input(self, x: object) -> torch.Tensor:
        """`check_image` at this tokenizer's size; the result is converted to the model's dtype and device (the
        dtype policy of `zoo.checks`, applied by `Tokenizer.__init_subclass__` to every `check_input`)."""
        return check_image(x, self.input_size)

    def reconstruct(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return super().reconstruct(x, **kwargs).clamp(0, 1)

    def example_input(self, batch_size: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = self.input_size
        coarse = torch.rand(batch_size, 3, max(h // 8, 1), max(w // 8, 1), generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


class FaceTokenizer(ImageTokenizer):
    """Faces: float `[B, 3, 224, 224]` face crops in [0, 1]; tokens carry face-model parameters in `meta`."""

    modality: ClassVar[str] = "face"
    image_size: int | tuple[int, int] = 224


class AudioTokenizer(Tokenizer):
    """Audio: float `[B, T]` or `[B, 1, T]` in [-1, 1]; `encode(x, sample_rate=sr)` resamples to `sample_rate`."""

    modality: ClassVar[str] = "audio"
    sample_rate: int = 24000
    min_samples: int = 1  # shortest clip (at `sample_rate`) the model can encode

    def prepare_audio(
        self,
        x: object,
        sample_rate: int | None = None,
        lengths: torch.Tensor | list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check, resample to `self.sample_rate`; returns `[B, T]` audio in the model's dtype and on its device, and
        `[B]` valid lengths (in samples, on the CPU)."""
        from zoo.io import resample

        wav = check_audio(x)
        source_rate = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long)
        elif isinstance(lengths, torch.Tensor) and (lengths.is_floating_point() or lengths.is_complex()):
            raise TypeError(f"lengths must be integers (samples per row), got dtype {lengths.dtype}")
        try:
            lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"lengths must be a LongTensor or a list of ints, got {lengths!r} ({err})") from None
        if lengths.shape != (wav.shape[0],) or (lengths < 1).any() or (lengths > wav.shape[-1]).any():
            raise ValueError(
                f"lengths must be [B]={wav.shape[0]} values in [1, T={wav.shape[-1]}], got {lengths.tolist()}"
            )
        wav = wav.float()
        if source_rate != self.sample_rate:
            wav = resample(wav, source_rate, self.sample_rate)
            lengths = torch.ceil(lengths.double() * self.sample_rate / source_rate).long().clamp(max=wav.shape[-1])
        wav = wav.to(device=self.device, dtype=self.dtype)
        if (lengths < self.min_samples).any():
            raise ValueError(
                f"clips must be at least {self.min_samples} samples at {self.sample_rate} Hz "
                f"({self.min_samples / self.sample_rate * 1000:.1f} ms); got lengths {lengths.tolist()}"
            )
        return wav, lengths

    def finish_audio(self, audio: torch.Tensor, tokens: Tokens, sample_rate: int | None = None) -> torch.Tensor:
        """Trim decoded `[B, T]` audio to the encoded length (`meta["num_samples"]`) and resample if asked."""
        from zoo.io import resample

        target = None if sample_rate is None else check_sample_rate(sample_rate)
        num_samples = tokens.meta.get("num_samples")
        if isinstance(num_samples, torch.Tensor) and num_samples.numel():
            if num_samples.is_floating_point() or num_samples.is_complex() or int(num_samples.min()) < 1:
                raise ValueError(f"tokens.meta['num_samples'] must hold positive integers (samples per clip), got "
                                 f"{num_samples.tolist()[:8]}; were these tokens made by another tokenizer?")
            audio = audio[..., : int(num_samples.max())]
        if target is not None and target != self.sample_rate:
            audio = resample(audio, self.sample_rate, target)
        return audio

    def example_input(self, batch_size: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        seconds = 0.5
        t = torch.arange(int(self.sample_rate * seconds)) / self.sample_rate
        freqs = 100 + 400 * torch.rand(batch_size, 1, generator=generator)
        tone = 0.3 * torch.sin(2 * torch.pi * freqs * t)
        return tone + 0.05 * torch.randn(batch_size, t.numel(), generator=generator)

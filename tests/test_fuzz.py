"""Property-based fuzzing of every public entry point of every registered tiny model.

For each `zoo.list_models("*-tiny*")` model (random weights), hypothesis draws inputs of random shapes, dtypes,
ranges and lengths, tokens that are valid, damaged or made by another model, and keyword values of every kind, and
calls encode / decode / embed / reconstruct / forward and the family methods (image_embedding, semantic_features,
decoder_features, estimate_complexity). The property: each call returns a valid result or raises ValueError or
TypeError with a message; any other exception (IndexError, RuntimeError from a kernel, KeyError, ...) fails.

Deterministic (`derandomize=True`, no example database), no deadline, few examples per model and entry point so
the whole file runs in a few minutes on 2 CPU cores; `ZOO_FUZZ_EXAMPLES=200` runs a longer search.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import zoo  # noqa: E402
from zoo.api import Tokenizer, Tokens  # noqa: E402

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("ZOO_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
ALLOWED = (ValueError, TypeError)
MODELS = zoo.list_models("*-tiny*")
METHODS = ("image_embedding", "semantic_embedding", "decoder_features", "estimate_complexity")
_CACHE: dict[str, Any] = {}


# -- the models, their valid tokens ------------------------------------------------------------------------------------


def model(name: str, *, train: bool = False) -> Tokenizer:
    """A random-weight model per name (seeded), in eval mode; `train=True` gives a separate copy for `forward`."""
    key = (name, train)
    if key not in _CACHE:
        torch.manual_seed(0)
        tok = zoo.load(name, weights=None)
        _CACHE[key] = tok.train() if train else tok.eval()
    return _CACHE[key]


def example(tok: Tokenizer, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = tok.example_input(batch, generator=g)
    if tok.modality == "audio":
        x = x[..., : tok.sample_rate // 4]  # 0.25 s keeps the audio cases quick
    return x


def valid_tokens(name: str) -> Tokens:
    """Tokens the model made itself from its example input (batch of 2)."""
    key = ("tokens", name)
    if key not in _CACHE:
        tok = model(name)
        with torch.inference_mode():
            _CACHE[key] = tok.encode(example(tok, 2))
    return _CACHE[key]


def _call(fn, *args, **kwargs):
    """Run one call: the result, or None when it raised an allowed error with a message; anything else fails.
    A FileNotFoundError is allowed when it names a path the call was given (e.g. `unclip="missing-folder"`)."""
    try:
        with torch.inference_mode():
            return fn(*args, **kwargs)
    except ALLOWED as err:
        message = str(err.args[0]) if err.args else ""
        assert message.strip(), f"{type(err).__name__} without a message from {fn.__qualname__}"
        return None
    except FileNotFoundError as err:
        given = [v for v in kwargs.values() if isinstance(v, str)]
        if not any(path in str(err) for path in given):
            raise
        return None


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


# -- strategies --------------------------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64,
          torch.bool]
RANGES = ["unit", "unit", "signed", "byte", "nan", "inf", "zeros", "ones", "huge", "tiny"]


def _values(shape: tuple[int, ...], kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    if kind == "signed":
        x = x * 2 - 1
    elif kind == "byte":
        x = (x * 255).round()
    elif kind in ("nan", "inf") and x.numel():
        x.view(-1)[int(torch.randint(x.numel(), (1,), generator=g))] = float(kind)
    elif kind == "zeros":
        x = torch.zeros(shape)
    elif kind == "ones":
        x = torch.ones(shape)
    elif kind == "huge":
        x = x * 1e30
    elif kind == "tiny":
        x = x * 1e-30
    return x


class Input:
    """A drawn model input, built on demand; its repr is the recipe (a failing example prints short)."""

    def __init__(self, shape: tuple[int, ...] | None, dtype: torch.dtype, kind: str, seed: int,
                 other: Any = None) -> None:
        self.shape, self.dtype, self.kind, self.seed, self.other = shape, dtype, kind, seed, other

    def make(self) -> Any:
        if self.shape is None:
            return self.other
        x = _values(self.shape, self.kind, self.seed)
        if self.dtype == torch.bool:
            return x > 0.5
        if not self.dtype.is_floating_point:
            return x.nan_to_num(0.0, 255.0, 0.0).clamp(-1e9, 1e9).to(self.dtype)
        return x.to(self.dtype)

    def __repr__(self) -> str:
        if self.shape is None:
            return f"Input(not a tensor: {self.other!r})"
        return f"Input(shape={self.shape}, dtype={self.dtype}, values={self.kind!r}, seed={self.seed})"


@st.composite
def tensors(draw, tok: Tokenizer) -> Input:
    """Model inputs: mostly of the right rank and size, often of the wrong dtype, range, size or rank."""
    form = draw(st.sampled_from(["right", "right", "right", "size", "rank", "batch0", "not_tensor"]))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(RANGES))
    seed = draw(st.integers(0, 2 ** 16))
    batch = draw(st.integers(1, 2))
    if form == "not_tensor":
        return Input(None, dtype, kind, seed, draw(st.sampled_from([None, 0.5, "image.png", [[0.5]]])))
    if tok.modality == "audio":
        length = draw(st.sampled_from([1, 7, 320, 1000, 3000, 6000]))
        shape: tuple[int, ...] = draw(st.sampled_from([(batch, length), (batch, 1, length)]))
        if form == "size":
            shape = (batch, 2, length)
        elif form == "rank":
            shape = draw(st.sampled_from([(length,), (batch, 1, 1, length), ()]))
        elif form == "batch0":
            shape = (0, length)
        if kind == "unit":
            kind = "signed"
    else:
        h, w = tok.input_size
        shape = (batch, 3, h, w)
        if form == "size":
            shape = draw(st.sampled_from([(batch, 3, h // 2, w), (batch, 1, h, w), (batch, 4, h, w),
                                          (batch, h, w, 3), (batch, 3, 1, 1), (batch, 3, h, 0)]))
        elif form == "rank":
            shape = draw(st.sampled_from([(3, h, w), (1, batch, 3, h, w), (h, w), ()]))
        elif form == "batch0":
            shape = (0, 3, h, w)
    return Input(shape, dtype, kind, seed)


def _batch(x: Any) -> int | None:
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else None


ODD = st.sampled_from([None, -1, 0, 1, 2, 3, 2.5, float("nan"), float("inf"), -7.5, "3", True, False, [1, 2], (),
                       10 ** 6])


def encode_kwargs(tok: Tokenizer) -> st.SearchStrategy:
    params = inspect.signature(tok.encode).parameters
    options: dict[str, st.SearchStrategy] = {}
    if "num_tokens" in params:
        options["num_tokens"] = st.one_of(ODD, st.integers(-3, 300), st.lists(st.integers(-2, 70), max_size=3),
                                          st.builds(lambda v: torch.tensor(v), st.lists(st.integers(0, 40),
                                                                                        min_size=1, max_size=3)))
    if "target_error" in params:
        options["target_error"] = st.one_of(ODD, st.floats(-1, 2),
                                            st.lists(st.floats(0, 1), max_size=3))
    if "sample_rate" in params:
        options["sample_rate"] = st.one_of(ODD, st.sampled_from([1, 999, 1000, 8000, 16000, 22050, 24000, 44100,
                                                                 48000, 44101, 768001, -16000, 16000.0, 16000.5]))
    if "lengths" in params:
        options["lengths"] = st.one_of(ODD, st.lists(st.integers(-2, 7000), min_size=0, max_size=3),
                                       st.builds(lambda v: torch.tensor(v), st.lists(st.integers(-1, 7000),
                                                                                     min_size=1, max_size=3)))
    if "generator" in params:
        options["generator"] = st.sampled_from([None, torch.Generator().manual_seed(1), "seed", 3])
    if "hull_points" in params:
        options["hull_points"] = st.sampled_from([None, torch.zeros(1, 5, 2), torch.rand(2, 30, 2), "x"])
    return st.fixed_dictionaries({}, optional=options)


def decode_kwargs(tok: Tokenizer) -> st.SearchStrategy:
    params = inspect.signature(tok.decode).parameters
    options: dict[str, st.SearchStrategy] = {}
    if "steps" in params:  # at most 3: a valid large count is just slow, not an error
        options["steps"] = st.sampled_from([None, -1, 0, 1, 2, 3, 2.5, "2", True, float("nan")])
    if "guidance" in params:
        options["guidance"] = st.one_of(ODD, st.floats(-3, 12))
    if "generator" in params:
        options["generator"] = st.sampled_from([None, torch.Generator().manual_seed(1), "seed", 3])
    if "sample_rate" in params:
        options["sample_rate"] = st.one_of(ODD, st.sampled_from([1, 8000, 16000, 24000, 44101, 48000, -1]))
    if "bandwidth_id" in params:
        options["bandwidth_id"] = st.one_of(ODD, st.integers(-2, 5), st.just(torch.tensor([0, 1])),
                                            st.just(torch.tensor([0.5])), st.just(torch.tensor([0, 1, 2])))
    if "apg" in params:
        options["apg"] = st.sampled_from([True, False, None, "yes"])
    if "noise" in params:
        options["noise"] = st.sampled_from([None, torch.zeros(1, 2, 3), torch.full((2, 4, 8, 8), float("nan")), "x"])
    if "image" in params:
        options["image"] = st.sampled_from([None, torch.rand(2, 3, 224, 224), torch.rand(1, 3, 8, 8), "x"])
    if "unclip" in params:
        options["unclip"] = st.sampled_from([None, "missing-folder", 3])
    return st.fixed_dictionaries({}, optional=options)


MUTATIONS = ["valid", "valid", "other_model", "ids_high", "ids_negative", "truncate", "extend", "add_k", "drop_k",
             "batch0", "no_ids", "layout", "lengths", "meta_drop", "meta_garbage", "not_tokens", "repeat"]
LAYOUTS = [(), (3,), (2, 2), "N+1", [(1, 1), (2, 2)], "grid", None, (16, 16), (8, 8), (-1, 4)]
GARBAGE = [-1, 0, 1.5, "x", None, [1, 2], "tensor[-5, 3]", "tensor[0.5, 0.5]", "tensor[1e7, 1]"]
GARBAGE_TENSORS = {"tensor[-5, 3]": torch.tensor([-5, 3]), "tensor[0.5, 0.5]": torch.tensor([0.5, 0.5]),
                   "tensor[1e7, 1]": torch.tensor([10 ** 7, 1])}
NOT_TOKENS = [None, "ids tensor", "tokens.safetensors", {"ids": None}]


class TokensCase:
    """Drawn tokens for model `name`: its own (batch 2), damaged by `mutation` with `value`, or another model's.
    Built on demand; the repr is the recipe."""

    def __init__(self, name: str, mutation: str, value: Any = None) -> None:
        self.name, self.mutation, self.value = name, mutation, value

    def __repr__(self) -> str:
        return f"TokensCase({self.name!r}, {self.mutation!r}, {self.value!r})"

    def make(self) -> Any:
        """The tokens, or the `(error,)` of a Tokens constructor that refused the damage (itself allowed)."""
        base = valid_tokens(self.name)
        ids, lengths, layout, meta = base.ids.clone(), base.lengths, base.layout, dict(base.meta)
        m, v = self.mutation, self.value
        if m == "valid":
            return base
        if m == "other_model":  # refused by its maker mark; unmarked (an LM's output), by the shape checks
            other, marked = v
            tokens = valid_tokens(other)
            return tokens if marked else Tokens(tokens.ids, tokens.lengths, tokens.layout,
                                                {k: x for k, x in tokens.meta.items() if k != "tokenizer"})
        if m == "batch0":
            return base[0:0]
        if m == "repeat":
            return Tokens.cat([base, base])
        if m == "not_tokens":
            return ids if v == "ids tensor" else v
        if m == "ids_high":
            ids[..., -1] = max(book.size for book in model(self.name).codebooks) + v
        elif m == "ids_negative":
            ids[:, 0] = -v
        elif m == "truncate":
            n = min(v, max(ids.shape[1] - 1, 0))
            ids = ids[:, :n]
            lengths = None if lengths is None else lengths.clamp(max=n)
        elif m == "extend":
            ids = torch.nn.functional.pad(ids, (0, 0, 0, v) if ids.dim() == 3 else (0, v))
        elif m == "add_k" and ids.dim() == 2:
            ids = ids[..., None].expand(*ids.shape[:2], v).clone()
        elif m == "drop_k" and ids.dim() == 3:
            ids = ids[..., 0]
        elif m == "no_ids":
            ids, lengths = ids[:, :0], None
        elif m == "layout":
            layout = (ids.shape[1] + 1,) if v == "N+1" else v
        elif m == "lengths":
            n = ids.shape[1]
            lengths = None if v is None else torch.full((ids.shape[0],), {"zeros": 0, "half": n // 2, "full": n}[v])
        elif m == "meta_drop":
            meta.pop(v, None)
        elif m == "meta_garbage":
            key, value = v
            meta[key] = GARBAGE_TENSORS.get(value, value) if isinstance(value, str) else value
        try:
            return Tokens(ids, lengths, layout, meta)
        except ALLOWED as err:
            assert str(err).strip()
            return (err,)


@st.composite
def tokens_for(draw, name: str) -> TokensCase:
    mutation = draw(st.sampled_from(MUTATIONS))
    value: Any = None
    others = [n for n in MODELS if n != name]
    if mutation == "other_model":
        value = (draw(st.sampled_from(others)), draw(st.booleans())) if others else None
        mutation = mutation if others else "valid"
    elif mutation in ("ids_high", "ids_negative"):
        value = draw(st.integers(1, 10 ** 6))
    elif mutation == "truncate":
        value = draw(st.integers(0, 64))
    elif mutation == "extend":
        value = draw(st.integers(1, 64))
    elif mutation == "add_k":
        value = draw(st.integers(1, 3))
    elif mutation == "layout":
        value = draw(st.sampled_from(LAYOUTS))
    elif mutation == "lengths":
        value = draw(st.sampled_from([None, "zeros", "half", "full"]))
    elif mutation == "meta_drop":
        keys = sorted(valid_tokens(name).meta)
        value = draw(st.sampled_from(keys)) if keys else None
    elif mutation == "meta_garbage":
        key = draw(st.sampled_from(sorted(valid_tokens(name).meta) + ["num_samples", "sample_rate", "image_size"]))
        value = (key, draw(st.sampled_from(GARBAGE)))
    elif mutation == "not_tokens":
        value = draw(st.sampled_from(NOT_TOKENS))
    return TokensCase(name, mutation, value)


# -- the properties ----------------------------------------------------------------------------------------------------


def _check_signal(tok: Tokenizer, y: Any, batch: int) -> None:
    assert isinstance(y, torch.Tensor) and y.is_floating_point(), type(y)
    assert y.shape[0] == batch, (tuple(y.shape), batch)


@pytest.mark.parametrize("name", MODELS)
def test_encode(name):
    tok = model(name)

    @FUZZ
    @given(x=tensors(tok), kwargs=encode_kwargs(tok))
    def run(x, kwargs):
        x = x.make()
        tokens = _call(tok.encode, x, **kwargs)
        if tokens is not None:
            assert isinstance(tokens, Tokens) and tokens.batch_size == _batch(x)

    run()


@pytest.mark.parametrize("name", MODELS)
def test_decode(name):
    tok = model(name)

    @FUZZ
    @given(drawn=tokens_for(name), kwargs=decode_kwargs(tok))
    def run(drawn, kwargs):
        tokens = drawn.make()
        if isinstance(tokens, tuple):
            return  # the Tokens constructor refused the damage with a clear error
        y = _call(tok.decode, tokens, **kwargs)
        if y is not None:
            _check_signal(tok, y, tokens.batch_size)

    run()


@pytest.mark.parametrize("name", MODELS)
def test_embed_and_family_methods(name):
    tok = model(name)
    methods = [getattr(tok, m) for m in METHODS if callable(getattr(tok, m, None))]

    @FUZZ
    @given(drawn=tokens_for(name), x=tensors(tok), pick=st.integers(0, 10))
    def run(drawn, x, pick):
        tokens = drawn.make()
        if isinstance(tokens, tuple):
            return
        e = _call(tok.embed, tokens)
        if e is not None:
            assert isinstance(e, torch.Tensor) and e.shape[0] == tokens.batch_size
        if methods:
            method = methods[pick % len(methods)]
            takes_image = method.__name__ == "estimate_complexity"
            _call(method, x.make() if takes_image else tokens)

    run()


@pytest.mark.parametrize("name", MODELS)
def test_reconstruct(name):
    tok = model(name)
    steps = {"steps": 1} if _accepts(tok.decode, "steps") else {}

    @FUZZ
    @given(x=tensors(tok))
    def run(x):
        x = x.make()
        y = _call(tok.reconstruct, x, **steps)
        if y is not None:
            _check_signal(tok, y, _batch(x))
            if tok.modality != "audio":
                assert 0 <= float(y.min()) and float(y.max()) <= 1  # reconstruct clamps images

    run()


@pytest.mark.parametrize("name", MODELS)
def test_forward(name):
    tok = model(name, train=True)

    @settings(FUZZ, max_examples=max(3, EXAMPLES // 3))
    @given(x=tensors(tok))
    def run(x):
        x = x.make()
        try:
            out = tok(x)
        except ALLOWED as err:
            assert str(err).strip(), type(err).__name__
            return
        assert out.reconstruction is None or isinstance(out.reconstruction, torch.Tensor)
        assert all(isinstance(v, torch.Tensor) for v in out.losses.values())

    run()


# Failures found by this file in families whose authors were told (see docs/reliability.md, "open findings"):
# (model, repr of the case) -> what was reported. Remove an entry when the family is fixed.
KNOWN: dict[tuple[str, str], str] = {}


def _every_damage(name: str) -> list[TokensCase]:
    """Each damage once (the hypothesis search above samples them; this makes sure none is missed)."""
    meta = sorted(valid_tokens(name).meta)
    values: dict[str, list] = {
        "other_model": [(n, marked) for n in MODELS if n != name for marked in (True, False)],
        "ids_high": [1], "ids_negative": [1], "truncate": [0, 1],
        "extend": [3], "add_k": [1, 2], "layout": LAYOUTS, "lengths": [None, "zeros", "half"],
        "meta_drop": meta, "not_tokens": NOT_TOKENS,
        "meta_garbage": [(k, g) for k in meta for g in (-1, "x", "tensor[-5, 3]", "tensor[0.5, 0.5]")],
    }
    cases = []
    for mutation in dict.fromkeys(MUTATIONS):
        cases += [TokensCase(name, mutation, v) for v in values.get(mutation, [None])]
    return cases


@pytest.mark.parametrize("name", MODELS)
def test_every_damage_of_the_tokens_once(name):
    tok = model(name)
    steps = {"steps": 1} if _accepts(tok.decode, "steps") else {}
    for case in _every_damage(name):
        if (name, repr(case)) in KNOWN:
            continue
        tokens = case.make()
        if isinstance(tokens, tuple):
            continue
        for fn, kwargs in ((tok.decode, steps), (tok.embed, {})):
            try:
                _call(fn, tokens, **kwargs)
            except Exception as err:
                raise AssertionError(f"{fn.__qualname__} on {case!r}: {type(err).__name__}: {err}") from err


ODD_VALUES = [None, -1, 0, 1, 2, 2.5, float("nan"), float("inf"), "3", True, [1, 2], (), [0], torch.tensor([1, 2]),
              torch.tensor([0.5]), torch.tensor([])]


@pytest.mark.parametrize("name", MODELS)
def test_every_input_form_and_odd_keyword_once(name):
    """Each input form in each dtype, each range, and each odd value of each keyword, once."""
    tok = model(name)
    if tok.modality == "audio":
        forms = [(1, 1), (1, 7), (2, 320), (1, 1, 1000), (2, 2, 1000), (1000,), (1, 1, 1, 10), (), (0, 100), (1, 0)]
        kind = "signed"
    else:
        h, w = tok.input_size
        forms = [(1, 3, h, w), (2, 3, h // 2, w), (1, 1, h, w), (1, 4, h, w), (1, h, w, 3), (1, 3, 1, 1),
                 (1, 3, h, 0), (3, h, w), (1, 1, 3, h, w), (0, 3, h, w)]
        kind = "unit"
    inputs = [Input(shape, dtype, kind, 0) for shape in forms for dtype in dict.fromkeys(DTYPES)]
    inputs += [Input(forms[0], torch.float32, k, 1) for k in dict.fromkeys(RANGES)]
    inputs += [Input(None, torch.float32, kind, 0, other) for other in (None, 0.5, "image.png", [[0.5]])]
    for case in inputs:
        try:
            _call(tok.encode, case.make())
        except Exception as err:
            raise AssertionError(f"encode({case!r}): {type(err).__name__}: {err}") from err
    x = Input(forms[0], torch.float32, kind, 0).make()
    steps = {"steps": 1} if _accepts(tok.decode, "steps") else {}
    tokens = valid_tokens(name)
    for fn, first in ((tok.encode, x), (tok.decode, tokens)):
        for param in list(inspect.signature(fn).parameters)[1:]:
            for value in ODD_VALUES:
                kwargs = {**(steps if fn == tok.decode else {}), param: value}  # every value is small (<= 2)
                try:
                    _call(fn, first, **kwargs)
                except Exception as err:
                    raise AssertionError(f"{fn.__qualname__}({param}={value!r}): {type(err).__name__}: {err}") \
                        from err


def test_every_tiny_model_is_fuzzed():
    assert MODELS, "no *-tiny* model is registered"
    assert all(math.isfinite(float(p.detach().float().sum())) for p in model(MODELS[0]).parameters())

"""The paper's two edits, on `Tokens`: identity (appearance) swap and expression transfer.

    a, b = tok.encode(x_a), tok.encode(x_b)
    tok.decode(swap_appearance(a, b), image=x_a)       # a's geometry and background, b's appearance tokens
    tok.decode(transfer_expression(a, b), image=x_a)   # a with b's expression, jaw and eyelids

(official `main/test_image_swap_token.py` and `main/test_image_swap_expression.py`).
"""

from __future__ import annotations

import torch

from zoo.tokens import Tokens

__all__ = ["EXPRESSION_KEYS", "swap_appearance", "transfer_expression"]

EXPRESSION_KEYS = ("expression_params", "jaw_params", "eyelid_params")


def _replace(target: Tokens, source: Tokens, keys: tuple[str, ...], ids: bool = False) -> Tokens:
    if not isinstance(target, Tokens) or not isinstance(source, Tokens):
        raise TypeError("both arguments must be TEASER Tokens (from tok.encode)")
    if source.batch_size not in (1, target.batch_size):
        raise ValueError(f"the source has {source.batch_size} samples; it must have 1 or {target.batch_size}")
    meta = dict(target.meta)
    for key in keys:
        value = source.meta.get(key)
        if not isinstance(value, torch.Tensor) or not isinstance(target.meta.get(key), torch.Tensor):
            raise ValueError(f"both Tokens need meta[{key!r}]; were they made by a TEASER tokenizer?")
        if value.shape[1:] != target.meta[key].shape[1:]:
            raise ValueError(f"meta[{key!r}] shapes differ: {tuple(value.shape)} vs {tuple(target.meta[key].shape)}")
        meta[key] = value.to(target.meta[key].device).expand_as(target.meta[key]).clone()
    new_ids = target.ids.clone()
    if ids:  # discrete (teaser-fsq) appearance lives in the ids; TEASER's slot ids are the same in every row
        if source.ids.shape[1:] != target.ids.shape[1:]:
            raise ValueError(f"ids shapes differ: {tuple(source.ids.shape)} vs {tuple(target.ids.shape)}")
        new_ids = source.ids.to(target.ids.device).expand_as(target.ids).clone()
    return Tokens(new_ids, target.lengths, target.layout, meta)


def swap_appearance(geometry: Tokens, appearance: Tokens) -> Tokens:
    """`geometry`'s FLAME parameters, camera and hull with `appearance`'s four tokens (and, for `teaser-fsq`, their
    ids); a batch of 1 is broadcast."""
    return _replace(geometry, appearance, ("tokens",), ids=True)


def transfer_expression(target: Tokens, source: Tokens) -> Tokens:
    """`target` with `source`'s expression, jaw and eyelid parameters (a batch of 1 is broadcast)."""
    return _replace(target, source, EXPRESSION_KEYS)

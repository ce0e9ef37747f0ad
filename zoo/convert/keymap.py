"""Key maps as tables: one `Rule` per official key pattern, usable in both directions.

    RULES = KeyMap([
        Rule("encoder.conv_blocks.{i}.res.{j}.{rest:*}", "encoder.stages.{i}.blocks.{j}.{rest:*}"),
        Rule("quant_conv.weight", "quant_proj.weight", to_ours=flatten_1x1, to_official=unflatten_1x1),
        Rule("quantize.codebook_used", None),               # training-only: dropped
    ])
    ours, dropped, unknown = RULES.to_ours(official_state)
    official = RULES.to_official(our_state)                  # the inverse (dropped keys are not recreated)

Templates: `{name}` matches one dotted component (`[^.]+`), `{name:*}` the rest of the key (`.+`), and
`{name:a|b}` one of the listed alternatives. Both templates of a rule must use the same placeholders. The first
matching rule wins, so specific rules go before general ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["KeyMap", "Rule", "flatten_1x1", "unflatten_1x1"]

_PLACEHOLDER = re.compile(r"\{(\w+)(?::([^}]*))?\}")
Transform = Callable[[Tensor], Tensor]


def _compile(template: str, inherited: dict[str, str | None] | None = None
             ) -> tuple[re.Pattern, dict[str, str | None]]:
    """Template -> (regex, {placeholder: spec}); a bare `{name}` takes the spec `inherited` gives it (the other
    side of the rule), so `{m:conv_in|conv_out}` constrains both directions."""
    parts, names, pos = [], {}, 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        name, spec = m.group(1), m.group(2)
        if name in names:
            raise ValueError(f"placeholder {{{name}}} appears twice in {template!r}")
        if spec is None and inherited:
            spec = inherited.get(name)
        names[name] = spec
        if spec is None:
            pattern = r"[^.]+"
        elif spec == "*":
            pattern = r".+"
        else:
            pattern = "|".join(re.escape(a) for a in spec.split("|"))
        parts.append(f"(?P<{name}>{pattern})")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts)), names


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def flatten_1x1(t: Tensor) -> Tensor:
    """A 1x1 convolution weight `[out, in, 1, 1]` (or `[out, in, 1]`) as a Linear weight `[out, in]`."""
    return t.flatten(1)


def unflatten_1x1(t: Tensor) -> Tensor:
    return t[:, :, None, None]


@dataclass(frozen=True)
class Rule:
    """One official key pattern and where it goes in our state dict (`ours=None`: dropped, e.g. training-only).

    `to_ours` / `to_official` transform the tensor on the way (e.g. a transpose); they must be inverses.
    """

    official: str
    ours: str | None
    to_ours: Transform | None = None
    to_official: Transform | None = None
    _official_re: re.Pattern = field(init=False, repr=False, compare=False)
    _ours_re: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        official_re, names = _compile(self.official)
        object.__setattr__(self, "_official_re", official_re)
        ours_re = None
        if self.ours is not None:
            ours_re, our_names = _compile(self.ours, names)
            if sorted(names) != sorted(our_names):
                raise ValueError(f"rule {self.official!r} -> {self.ours!r}: both sides need the same placeholders")
        object.__setattr__(self, "_ours_re", ours_re)

    def match_official(self, key: str) -> dict[str, str] | None:
        m = self._official_re.fullmatch(key)
        return None if m is None else m.groupdict()

    def match_ours(self, key: str) -> dict[str, str] | None:
        if self._ours_re is None:
            return None
        m = self._ours_re.fullmatch(key)
        return None if m is None else m.groupdict()


class KeyMap:
    """An ordered table of `Rule`s (first match wins)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    def __add__(self, other: KeyMap) -> KeyMap:
        return KeyMap(self.rules + other.rules)

    def official_to_ours(self, key: str) -> tuple[Rule, str | None] | None:
        """(rule, our key or None when dropped) for an official key; None when no rule knows it."""
        for rule in self.rules:
            values = rule.match_official(key)
            if values is not None:
                return rule, (None if rule.ours is None else _fill(rule.ours, values))
        return None

    def to_ours(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
        """Official tensors -> (our tensors, dropped official keys, unknown official keys)."""
        out: dict[str, Tensor] = {}
        dropped: list[str] = []
        unknown: list[str] = []
        for key, value in state.items():
            found = self.official_to_ours(key)
            if found is None:
                unknown.append(key)
                continue
            rule, new = found
            if new is None:
                dropped.append(key)
                continue
            if new in out:
                raise ValueError(f"two official tensors map to {new!r} (the second is {key!r})")
            out[new] = rule.to_ours(value) if rule.to_ours is not None else value
        return out, dropped, unknown

    def to_official(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Our tensors -> the official layout (the inverse map); raises for a key no rule produces."""
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            for rule in self.rules:
                values = rule.match_ours(key)
                if values is not None:
                    out[_fill(rule.official, values)] = rule.to_official(value) if rule.to_official else value
                    break
            else:
                raise KeyError(f"no rule maps our tensor {key!r} back to the official layout")
        return out


def check_complete(ours: dict[str, Tensor], model_state: dict[str, Tensor], what: str) -> None:
    """Raise a ValueError listing missing / unexpected / wrongly shaped tensors of a converted state dict."""
    missing = sorted(set(model_state) - set(ours))
    extra = sorted(set(ours) - set(model_state))
    shapes = [f"{k}: checkpoint {tuple(ours[k].shape)} vs model {tuple(model_state[k].shape)}"
              for k in sorted(set(ours) & set(model_state)) if tuple(ours[k].shape) != tuple(model_state[k].shape)]
    problems = []
    if extra:
        problems.append(f"unknown keys ({len(extra)}): {extra[:20]}{' ...' if len(extra) > 20 else ''}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:8]) + (" ..." if len(shapes) > 8 else ""))
    if problems:
        raise ValueError(f"{what}:\n  " + "\n  ".join(problems))


def is_meta(t: Tensor) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"

"""What every official-checkpoint converter is: read the release, infer the architecture, filter the tensors.

A converter never builds a model. `zoo.load(name)` builds the registered architecture `cls(**kwargs)` and asks
the converter (1) which constructor kwargs the official files imply, to check them against the registered ones,
and (2) for the official state dict filtered into that model's names and shapes (timm's `checkpoint_filter_fn`
habit). `zoo.from_official(family, checkpoint, config)` is the same three steps with the inferred kwargs.

    @register_converter("myfamily")
    class MyFamilyConverter(Converter):
        def read(self, checkpoint, config=None): ...             # -> OfficialCheckpoint (tensors + config)
        def infer_kwargs(self, raw): ...                         # -> constructor kwargs the files imply
        def convert_state_dict(self, raw, model): ...            # -> our state dict (refuses unknown keys)
        def to_official(self, model): ...                        # optional: the inverse key map
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Converter", "OfficialCheckpoint"]


@dataclass
class OfficialCheckpoint:
    """An official release read into memory, nothing built yet.

    Attributes:
        family: the zoo family it is for.
        state: the official tensors, official key names (training-only ones included; the converter drops them).
        config: the official config that came with it (parsed YAML/JSON), or None.
        source: where it was read from, for messages.
        extras: companion data a converter needs (e.g. FlexTok's VAE config and weights).
    """

    family: str
    state: dict[str, Tensor]
    config: Any = None
    source: str = "<in memory>"
    extras: dict[str, Any] = field(default_factory=dict)


class Converter:
    """Base class of official-checkpoint converters (one per family, registered with `@register_converter`).

    Class attributes:
        training_kwargs: kwargs that `infer_kwargs` reads from the official config but that change only training
            (dropout rates, timestep sampling, ...). `from_official` builds with them so that fine-tuning matches
            the official recipe; a registered variant keeps its own values and they are not compared.
        release_kwargs: values that belong to a release's files rather than to the architecture (e.g. FlexTok's VAE
            latent scale, stated by the VAE's config.json). A registered variant may leave them null: they then
            come from the files. A registered value is checked like any other.
    """

    family: ClassVar[str] = ""
    training_kwargs: ClassVar[frozenset[str]] = frozenset()
    release_kwargs: ClassVar[frozenset[str]] = frozenset()

    def read(self, checkpoint: str | Path | dict, config: Any = None, **options: Any) -> OfficialCheckpoint:
        """Read the release files (never executing pickled code) into an `OfficialCheckpoint`."""
        raise NotImplementedError

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        """The constructor kwargs the official files imply (from tensor shapes and the official config)."""
        raise NotImplementedError

    def convert_state_dict(self, raw: OfficialCheckpoint, model: nn.Module) -> dict[str, Tensor]:
        """The official tensors renamed/reshaped into `model`'s state-dict names. Unknown official keys and
        missing model keys are refused with a list; only documented training-only tensors are dropped."""
        raise NotImplementedError

    def to_official(self, model: nn.Module) -> dict[str, Tensor]:
        """Our state dict in the official layout (the inverse key map), for exports and shape-only stand-ins."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse key map")

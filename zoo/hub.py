"""torch.hub entrypoints built from the registry (used by `hubconf.py`)."""

from __future__ import annotations

from typing import Any, Callable


def _entrypoint(name: str) -> Callable[..., Any]:
    from zoo.registry import get_spec, load

    spec = get_spec(name)

    def entry(weights: Any = "default", **kwargs: Any):
        return load(name, weights=weights, **kwargs)

    lines = [f"{name}: {spec.description}".rstrip(": "), ""]
    if spec.paper:
        lines.append(f"Paper: {spec.paper}")
    if spec.weights:
        for tag, w in spec.weights.items():
            star = " (default)" if tag == spec.default_weights else ""
            lines.append(f"weights={tag!r}{star}: {w.format}, {w.source.describe()}, licence {w.license or 'unknown'}")
    else:
        lines.append("No published weights yet: pass weights=None for a random model.")
    lines.append("weights=None builds the architecture with random weights; weights=PATH loads a .safetensors file.")
    lines.append("precision='bf16' (or 'fp16' on GPU) runs encode / decode in reduced precision (docs/performance.md).")
    entry.__doc__ = "\n".join(lines)
    entry.__name__ = name.replace("-", "_").replace(".", "_")
    return entry


def hub_entrypoints() -> dict[str, Callable[..., Any]]:
    """`{name: fn}` for every registered model, plus an underscore alias for names with dashes or dots."""
    from zoo.registry import list_models

    entries = {}
    for name in list_models():
        fn = _entrypoint(name)
        entries[name] = fn
        entries[fn.__name__] = fn
    return entries

"""Objectives by name: `@register_objective("name")` on an `Objective` subclass, `build_objective(name, **kw)`."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

__all__ = ["build_objective", "get_objective", "list_objectives", "register_objective"]

_OBJECTIVES: dict[str, type] = {}
_DISCOVERED = False


def register_objective(name: str) -> Callable[[type], type]:
    """Class decorator: make an `Objective` subclass buildable from a recipe as `objective.name: <name>`."""

    def decorate(cls: type) -> type:
        from zoo.train.objectives.base import Objective

        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"register_objective({name!r}) expects an Objective subclass, got {cls!r}")
        if name in _OBJECTIVES and _OBJECTIVES[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"objective {name!r} is already registered by {_OBJECTIVES[name].__qualname__}")
        _OBJECTIVES[name] = cls
        cls.objective_name = name
        return cls

    return decorate


def _discover() -> None:
    """Import every module of `zoo.train.objectives` once, so family files register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import zoo.train.objectives as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def list_objectives() -> list[str]:
    _discover()
    return sorted(_OBJECTIVES)


def get_objective(name: str) -> type:
    _discover()
    if name not in _OBJECTIVES:
        close = difflib.get_close_matches(name, list(_OBJECTIVES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown objective {name!r}{hint} Registered: {', '.join(sorted(_OBJECTIVES))}")
    return _OBJECTIVES[name]


def build_objective(name: str, **kwargs: Any):
    """Instantiate objective `name`; unknown keyword arguments are reported with the accepted ones."""
    cls = get_objective(name)
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and accepted is not None:
        raise TypeError(f"objective {name!r} got unknown kwargs {unknown}; it accepts {accepted}")
    return cls(**kwargs)


def _accepted_kwargs(cls: type) -> list[str] | None:
    """Keyword names of `cls.__init__`, following `**kwargs` up the class chain; None if anything goes."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        params = inspect.signature(klass.__dict__["__init__"]).parameters
        names += [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
                  and p.kind is not inspect.Parameter.VAR_POSITIONAL and n not in names]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return None

"""Objectives by name: `@register_objective("name")` on an `Objective` subclass, `build_objective(name, **kw)`.

The table is a `zoo.plugins.Registry`: a family's objective is one decorated class in a module of
`zoo.train.objectives` (found on the first lookup), or in a module a recipe lists under `imports`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from zoo.plugins import Registry

__all__ = ["OBJECTIVES", "build_objective", "get_objective", "list_objectives", "register_objective"]

OBJECTIVES: Registry[type] = Registry("objective", packages=("zoo.train.objectives",))


def register_objective(name: str) -> Callable[[type], type]:
    """Class decorator: make an `Objective` subclass buildable from a recipe as `objective.name: <name>`."""
    register = OBJECTIVES.register(name)

    def decorate(cls: type) -> type:
        from zoo.train.objectives.base import Objective

        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"register_objective({name!r}) expects an Objective subclass, got {cls!r}")
        register(cls)
        cls.objective_name = name
        return cls

    return decorate


def list_objectives() -> list[str]:
    return OBJECTIVES.names()


def get_objective(name: str) -> type:
    """The objective class registered as `name` (KeyError with close matches and the registered names)."""
    return OBJECTIVES.get(name)


def build_objective(name: str, **kwargs: Any):
    """Instantiate objective `name`; unknown keyword arguments are reported with the accepted ones."""
    cls = get_objective(name)
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(kwargs) - set(accepted)) if accepted is not None else []
    if unknown:
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

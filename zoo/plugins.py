"""`Registry`: the one way zoo registers things by name (families, converters, objectives, datasets, metrics).

    DATASETS = Registry("dataset", packages=("zoo.data",))

    @DATASETS.register("image_folder")
    class ImageFolder(Dataset): ...

    DATASETS.get("image_folder")          # discovers the packages once, then looks up
    DATASETS.names()                      # sorted names

A decorator registers; `packages` are imported on first lookup (every non-underscore module, recursively), so a
new entry is one decorated definition in a new module and nothing else. `lazy_module` maps a name to the module
that registers it, for registries whose lookups must stay cheap (one converter imported, not every one).
Unknown names get the close matches and the full list; registering a name twice with another object is an error.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "import_submodules"]

T = TypeVar("T")


def import_submodules(package: str) -> None:
    """Import every module of `package` and of its subpackages whose name does not start with an underscore."""
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            importlib.import_module(info.name)


class Registry(Generic[T]):
    """Name -> object, filled by a decorator, with package discovery and helpful errors.

    Args:
        kind: what is registered, for messages ("family", "dataset", ...).
        packages: packages whose modules are imported (once) before the first lookup.
        check: called with each registered object; raises TypeError when it is not the right kind of thing.
        lazy_module: name -> module path that registers `name` when imported (tried before a full discovery).
    """

    def __init__(
        self,
        kind: str,
        packages: tuple[str, ...] = (),
        check: Callable[[Any], None] | None = None,
        lazy_module: Callable[[str], str] | None = None,
    ) -> None:
        self.kind = kind
        self.packages = tuple(packages)
        self._check = check
        self._lazy_module = lazy_module
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._discovered = False

    # -- registering ----------------------------------------------------------------------------------------------
    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`; `info` is kept for `info(name)`."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorate(obj: T) -> T:
            self.add(name, obj, **info)
            return obj

        return decorate

    def add(self, name: str, obj: T, **info: Any) -> None:
        if self._check is not None:
            self._check(obj)
        old = self._entries.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise ValueError(f"{self.kind} {name!r} is already registered by {_qualname(old)}")
        self._entries[name] = obj
        self._info[name] = dict(info)

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)
        self._info.pop(name, None)

    # -- looking up -----------------------------------------------------------------------------------------------
    def discover(self) -> None:
        """Import the registry's packages once (each module registers what it defines)."""
        if self._discovered:
            return
        self._discovered = True
        for package in self.packages:
            import_submodules(package)

    def _try_lazy(self, name: str) -> None:
        if self._lazy_module is None or name in self._entries:
            return
        module = self._lazy_module(name)
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the module exists but needs something missing: say so
                raise

    def get(self, name: str) -> T:
        self._try_lazy(name)
        if name not in self._entries:
            self.discover()
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._info[name])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._try_lazy(name)
        if name not in self._entries:
            self.discover()
        return name in self._entries

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        return iter(sorted(self._entries.items()))

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(known) or 'none'})"

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"

"""Where the official-code fixtures live, for every test module.

The parity fixtures (files written by the official code) are not part of the repository: they sit in the `shared/`
folder beside the clone (`../shared/fixtures/<family>/`), or wherever `ZOO_SHARED` points. Tests that need them are
skipped, with the path that was tried, when they are absent.

    from conftest import fixture_path, needs_official_fixture, official_fixture

    FIXTURE = fixture_path("gigatok")                                  # the folder, present or not
    needs_fixture = needs_official_fixture("gigatok", "io.safetensors")  # a skipif marker

    def test_parity():
        folder = official_fixture("gigatok", "VQ_fixture256.pt")       # the folder, or pytest.skip(...)

or, as a pytest fixture: `def test_x(official_fixture_dir): folder = official_fixture_dir("gigatok", "io.safetensors")`.

Also `load_script(path)`: a script of the repository (a recipe, benchmark or corpus builder, `hubconf.py`) imported
as a module, for the tests that call its functions.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["fixture_path", "has_official_fixture", "load_script", "needs_official_fixture", "official_fixture",
           "shared_dir"]


def shared_dir() -> Path:
    """The shared/ folder: `$ZOO_SHARED`, default `../shared` beside the repository."""
    env = os.environ.get("ZOO_SHARED")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared"


def fixture_path(family: str) -> Path:
    """The folder of `family`'s official fixture (it may not exist)."""
    return shared_dir() / "fixtures" / family


def _missing(family: str, files: tuple[str, ...]) -> list[Path]:
    folder = fixture_path(family)
    if not folder.is_dir():
        return [folder]
    return [folder / name for name in files if not (folder / name).exists()]


def _reason(family: str, missing: list[Path]) -> str:
    what = ", ".join(str(path) for path in missing)
    return f"official {family} fixture not found at {what} (set ZOO_SHARED to the shared/ folder)"


def has_official_fixture(family: str, *files: str) -> bool:
    """True when `family`'s fixture folder holds every one of `files` (the folder itself when none is named)."""
    return not _missing(family, files)


def official_fixture(family: str, *files: str) -> Path:
    """The folder of `family`'s official fixture; skips the calling test when it or one of `files` is absent."""
    missing = _missing(family, files)
    if missing:
        pytest.skip(_reason(family, missing))
    return fixture_path(family)


def needs_official_fixture(family: str, *files: str) -> pytest.MarkDecorator:
    """A `skipif` marker for tests that need `family`'s official fixture (with `files` in it)."""
    missing = _missing(family, files)
    return pytest.mark.skipif(bool(missing), reason=_reason(family, missing) if missing else "")


@pytest.fixture
def official_fixture_dir() -> Callable[..., Path]:
    """`official_fixture_dir(family, *files)`: the fixture folder, or a skip naming the path that was tried."""
    return official_fixture


def load_script(path: Path) -> ModuleType:
    """Import the Python file `path` as a module named `script_<folder>_<stem>`, registered in `sys.modules`
    (dataclasses resolve their annotations through it)."""
    path = Path(path)
    name = f"script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

"""Configs hold architecture and weights entries only: no machine paths, no training commands or history (those live
in the family's docs page, which each of our weights entries points to)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("**/*.yaml"))
ABSOLUTE = re.compile(r"(?<![\w.~])/(work|home|root|Users|tmp|scratch|mnt|data)/")


def _keys(node, where: str = ""):
    """Every (path, key) of the mappings in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}.{key}".lstrip("."), key
            yield from _keys(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _keys(value, f"{where}[{i}]")


def _anchor(heading: str) -> str:
    """The GitHub anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_configs_are_found():
    assert len(CONFIGS) > 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_has_no_machine_paths_or_commands(path: Path):
    text = path.read_text()
    bad = [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if ABSOLUTE.search(line)]
    assert not bad, f"{path.name} holds absolute paths of one machine (use the docs page for commands): {bad}"
    commands = [where for where, key in _keys(yaml.safe_load(text)) if key == "command"]
    assert not commands, f"{path.name} has command: keys {commands}; exact commands belong in docs/<family>.md"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_our_weights_point_to_their_docs_section(path: Path):
    data = yaml.safe_load(path.read_text())
    for tag, entry in (data.get("weights") or {}).items():
        if tag == "default" or not isinstance(entry, dict):
            continue
        ours = entry.get("format", "zoo") == "zoo" and entry.get("file")
        if not ours and "docs" not in entry:
            continue
        assert entry.get("docs"), f"{path.name}: our weights {tag!r} need a docs: pointer to how they were made"
        page, _, anchor = entry["docs"].partition("#")
        doc = ROOT / page
        assert doc.is_file(), f"{path.name}: weights {tag!r} point to {page}, which does not exist"
        anchors = {_anchor(line.lstrip("#")) for line in doc.read_text().splitlines() if line.startswith("#")}
        assert not anchor or anchor in anchors, f"{path.name}: {page} has no section #{anchor}"

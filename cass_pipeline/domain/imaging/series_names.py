"""Workstation series names to canonical branches, through an alias table kept as data."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

from cass_pipeline.domain.anatomy import BRANCHES

DEFAULT_ALIASES = Path(__file__).with_name("series_aliases.yaml")
NOISE_WORDS = re.compile(r"\b(?:ORIGINAL|ORIG|CURVED|CPR|MPR|STRETCHED|STRAIGHTENED)\b")


def normalise(name: str) -> str:
    """'LAD-D1 original' -> 'LADD1': upper case, noise words and separators removed."""
    upper = NOISE_WORDS.sub(" ", name.upper().replace("_", " "))
    return re.sub(r"[^A-Z0-9]", "", upper)


@lru_cache(maxsize=8)
def alias_table(path: Path = DEFAULT_ALIASES) -> dict[str, str]:
    """Normalised alias -> canonical branch; fails on unknown branches or clashing aliases."""
    raw = yaml.safe_load(Path(path).read_text())
    table: dict[str, str] = {}
    for branch, aliases in raw.items():
        if branch not in BRANCHES:
            raise ValueError(f"{path}: unknown canonical branch {branch!r}")
        for alias in [branch, *aliases]:
            key = normalise(str(alias))
            if table.get(key, branch) != branch:
                raise ValueError(f"{path}: alias {alias!r} names both {table[key]} and {branch}")
            table[key] = branch
    return table


def branch_of_series(name: str | None, path: Path = DEFAULT_ALIASES) -> str | None:
    """Canonical branch of a series name, or None when the table does not know it."""
    if not name:
        return None
    return alias_table(path).get(normalise(name))

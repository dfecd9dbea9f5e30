"""Workstation series names to canonical branches, through an alias table kept as data."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path

from cass_pipeline.domain.anatomy import BRANCHES
from cass_pipeline.domain.storage import read_yaml

DEFAULT_ALIASES = Path(__file__).with_name("series_aliases.yaml")
NOISE_WORDS = re.compile(r"\b(?:ORIGINAL|ORIG|CURVED|CPR|MPR|STRETCHED|STRAIGHTENED)\b")


def normalise(name: str) -> str:
    """'LAD-D1 original' -> 'LADD1': upper case, noise words and separators removed."""
    upper = NOISE_WORDS.sub(" ", name.upper().replace("_", " "))
    return re.sub(r"[^A-Z0-9]", "", upper)


def read_aliases(path: Path) -> dict[str, list[str]]:
    """Canonical branch -> its aliases, from a YAML table; fails on unknown branches."""
    raw = read_yaml(Path(path)) or {}
    for branch in raw:
        if branch not in BRANCHES:
            raise ValueError(f"{path}: unknown canonical branch {branch!r}")
    return {branch: [str(a) for a in aliases or []] for branch, aliases in raw.items()}


@lru_cache(maxsize=8)
def alias_table(path: Path = DEFAULT_ALIASES, site: Path | None = None) -> dict[str, str]:
    """Normalised alias -> canonical branch: the table at `path` (which must not name one
    alias for two branches), then a site's own table merged over it (the site wins)."""
    table: dict[str, str] = {}
    for source in (path, site) if site else (path,):
        for branch, aliases in read_aliases(source).items():
            for alias in [branch, *aliases]:
                key = normalise(alias)
                if source == path and table.get(key, branch) != branch:
                    raise ValueError(
                        f"{path}: alias {alias!r} names both {table[key]} and {branch}"
                    )
                table[key] = branch
    return table


def merged_aliases(path: Path = DEFAULT_ALIASES, site: Path | None = None) -> dict:
    """The merged table in the YAML form (branch -> normalised aliases), for a model bundle."""
    merged: dict[str, list[str]] = {}
    for alias, branch in sorted(alias_table(path, site).items()):
        merged.setdefault(branch, []).append(alias)
    return merged


def branch_of_series(
    name: str | None, path: Path = DEFAULT_ALIASES, site: Path | None = None
) -> str | None:
    """Canonical branch of a series name, or None when the tables do not know it."""
    if not name:
        return None
    return alias_table(path, site).get(normalise(name))


def closest_branch(name: str, path: Path = DEFAULT_ALIASES, site: Path | None = None) -> str | None:
    """The canonical branch whose alias is nearest to an unknown series name (a hint)."""
    table, key = alias_table(path, site), normalise(name)
    prefixes = [alias for alias in table if len(alias) >= 2 and key.startswith(alias)]
    if prefixes:  # "LAD proximal" -> LAD
        return table[max(prefixes, key=len)]
    match = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    return table[match[0]] if match else None

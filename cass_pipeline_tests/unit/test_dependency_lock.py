"""The lock is pyproject.toml's, and the environment is the lock (`make lock`, `make env`)."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
STALE = "pyproject.toml and requirements.lock disagree: run `make lock` (README, 'Dependencies')"


def locked_pins() -> dict[str, str]:
    """Package name -> pinned version, from requirements.lock."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return {canonicalize_name(m[1]): m[2] for m in map(PIN.match, lines) if m}


def project_requirements() -> list[Requirement]:
    """CASS's requirements with the `dev` extra, its references to its own extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own, extras = canonicalize_name(project["name"]), ["dev"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    while extras:
        for text in project["optional-dependencies"][extras.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == own:
                extras.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def needed(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a package's requirement applies here with the package's `extras` asked for."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": e}) for e in {"", *extras})


def closure(roots: list[Requirement]) -> set[str]:
    """Every installed distribution the roots need, through the packages' own metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if needed(requirement, set(extras)):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_every_requirement_of_pyproject_is_pinned_in_the_lock_within_its_range():
    pins = locked_pins()
    pinned = {r: pins.get(canonicalize_name(r.name)) for r in project_requirements()}
    unpinned = [str(r) for r, version in pinned.items() if version is None]
    outside = [
        f"{r} (locked {version})"
        for r, version in pinned.items()
        if version is not None and not r.specifier.contains(Version(version), prereleases=True)
    ]
    assert unpinned == [] and outside == [], STALE


def test_the_environment_holds_the_locked_versions():
    pins = locked_pins()
    differ = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(version):
            differ[name] = (version, installed)
    assert differ == {}, f"locked vs installed: {differ}; `make env` installs the lock"


def test_the_lock_holds_nothing_pyproject_does_not_need():
    pins = locked_pins()
    assert set(pins) - closure(project_requirements()) == set(), STALE


def test_dask_and_distributed_are_a_matching_pair():
    pins = locked_pins()
    (wanted,) = (
        Requirement(text).specifier
        for text in metadata.requires("distributed")
        if Requirement(text).name == "dask" and needed(Requirement(text), set())
    )
    assert wanted.contains(pins["dask"]), f"distributed {pins['distributed']} wants dask {wanted}"

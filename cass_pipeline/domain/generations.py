"""Generations of a folder of outputs: written beside the published one, published by one
atomic switch, removed once no reader uses them.

`<root>/generations/<number>/` holds one complete generation (the image store, its manifest
and tables); `<root>/current` is a symbolic link to the published one, replaced atomically.
A reader pins one generation (`reading`: a shared flock on its `.readers.lock`) and reads
only it; a run can also mark a generation as its own (`mark_user`), so that its later steps
read the same one. Writers build under the folder's writer lock (`storage.exclusive_writer`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cass_pipeline.domain.storage import open_lock
from cass_pipeline.layout import CURRENT, GENERATIONS, DataLayout

READERS_LOCK, USERS = ".readers.lock", ".users"
#: What a generation is built as until its writer publishes it (or dies).
BUILDING = ".building"


class GenerationMissingError(FileNotFoundError):
    """A generation asked for is not there (never published, or removed)."""


@dataclass(frozen=True)
class Generations:
    """The generations under `root` (`processed/images`)."""

    root: Path

    @property
    def folder(self) -> Path:
        return self.root / GENERATIONS

    def path(self, name: str) -> Path:
        return self.folder / name

    def current(self) -> str | None:
        """The published generation's name, None before the first publication."""
        try:
            target = os.readlink(self.root / CURRENT)
        except OSError:  # not there yet
            return None
        return Path(target).name

    def names(self) -> list[str]:
        """Every generation, published or not, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted((p.name for p in self.folder.iterdir() if p.name.isdigit()), key=int)

    def building(self) -> str:
        """The generation a writer (holding the writer lock) builds: the one a killed writer
        left unpublished, resumed, else a new one numbered after the newest."""
        names, current = self.names(), self.current()
        for name in reversed(names):
            if name != current and (self.path(name) / BUILDING).exists():
                return name
        name = f"{int(names[-1]) + 1 if names else 1:06d}"
        self.path(name).mkdir(parents=True)
        (self.path(name) / BUILDING).touch()
        return name

    @contextmanager
    def build(self, user: str) -> Iterator[str]:
        """The generation to write (`building`), marked as `user`'s, published when the block
        succeeds; left unpublished (and resumed by the next writer) when it fails."""
        name = self.building()
        self.mark_user(name, user)
        yield name
        self.publish(name)

    def publish(self, name: str) -> None:
        """Make `name` the published generation in one rename of the `current` link."""
        (self.path(name) / BUILDING).unlink(missing_ok=True)
        link = self.root / f".{CURRENT}.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path(GENERATIONS) / name)
        os.replace(link, self.root / CURRENT)

    def mark_user(self, name: str, user: str) -> None:
        """Record that `user` (a run) reads `name`, kept until `in_use(user)` says it ended."""
        (self.path(name) / USERS).mkdir(exist_ok=True)
        (self.path(name) / USERS / user).touch()

    def used_by(self, user: str) -> str | None:
        """The newest generation `user` marked as its own."""
        marked = [n for n in self.names() if (self.path(n) / USERS / user).exists()]
        return marked[-1] if marked else None

    def remove_unused(self, in_use: Callable[[str], bool] = lambda user: False) -> list[str]:
        """Remove every generation but the published one that no reader holds and no user
        still `in_use`; a writer calls it after publishing. The names removed."""
        removed = []
        current = self.current()
        for name in self.names():
            folder = self.path(name)
            users = [u.name for u in (folder / USERS).glob("*")]
            if name == current or any(in_use(user) for user in users):
                continue
            fd = open_lock(folder / READERS_LOCK)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a reader holds it
                    continue
                doomed = self.folder / f".removing-{name}-{os.getpid()}"
                os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(name)
        for leftover in self.folder.glob(".removing-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return removed

    @contextmanager
    def reading(self, name: str | None = None) -> Iterator[str]:
        """Hold generation `name` (default: the published one) for reading: it is not removed
        until the block ends. Yields its name."""
        for _ in range(100):
            wanted = name or self.current()
            if wanted is None:
                raise GenerationMissingError(
                    f"no processed data: no image generation is published under {self.root}; "
                    "run `make run` or materialise the images asset first"
                )
            fd = open_lock(self.path(wanted) / READERS_LOCK)
            if fd is None:
                if name is not None:
                    raise GenerationMissingError(f"generation {name} is not under {self.folder}")
                time.sleep(0.01)  # removed since we looked: look again
                continue
            with os.fdopen(fd, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)
                if not self.path(wanted).is_dir():  # removed while we waited for the lock
                    continue
                yield wanted
                return
        raise GenerationMissingError(f"no generation under {self.root} could be held")


@contextmanager
def held_layout(layout: DataLayout) -> Iterator[DataLayout]:
    """`layout` at its image generation (default: the published one), held while the block
    reads it."""
    with Generations(layout.image_generations).reading(layout.generation) as name:
        yield layout.at_generation(name)

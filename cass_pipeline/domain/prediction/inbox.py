"""An inbox folder where patient exports arrive, one sub-folder per patient.

A folder is ready once it has not changed between two looks and its newest file is older
than a quiet period, so an export still being copied (by `cp -p` or rsync, which keep old
modification times) is not picked up half-written. Folders are known by their pseudonyms
only: folder names may be MRNs, and what the scan remembers is shown in the UI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cass_pipeline.domain.cohort.index import folder_patient_key


def patient_folders(inbox: Path) -> list[Path]:
    """The inbox's patient folders (hidden ones, such as a copy tool's staging, left out)."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_state(folder: Path) -> tuple[str, float]:
    """A digest of every file's name, size and time (hidden files too: a copy in progress
    often writes one), and the newest modification time."""
    digest, newest = hashlib.sha256(), 0.0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(
                f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
            newest = max(newest, stat.st_mtime)
    return digest.hexdigest()[:16], newest


@dataclass
class InboxScan:
    """Patients ready for prediction (by pseudonym) and the memory for the next scan."""

    ready: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    memory: dict = field(default_factory=lambda: {"pending": {}, "done": {}})


def scan_inbox(
    inbox: Path, memory: dict, pseudonym: Callable[[str], str], now: float, quiet_s: float
) -> InboxScan:
    """Which folders are new or changed and now stable; `memory` is the last scan's."""
    pending, done = dict(memory.get("pending", {})), dict(memory.get("done", {}))
    scan = InboxScan(memory={"pending": {}, "done": done})
    for folder in patient_folders(inbox):
        patient = pseudonym(folder_patient_key(folder))
        state, newest = folder_state(folder)
        if not newest or done.get(patient) == state:
            continue
        if pending.get(patient) == state and now - newest >= quiet_s:
            scan.ready.append(patient)
            done[patient] = state
        else:
            scan.waiting.append(patient)
            scan.memory["pending"][patient] = state
    return scan


def folder_of(inbox: Path, patient: str, pseudonym: Callable[[str], str]) -> Path | None:
    """The inbox folder whose pseudonym is `patient`."""
    return next(
        (f for f in patient_folders(inbox) if pseudonym(folder_patient_key(f)) == patient), None
    )

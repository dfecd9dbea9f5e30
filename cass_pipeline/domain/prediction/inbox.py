"""An inbox folder where exports arrive, one sub-folder per study (a patient may have
several: the newest is scored, the others are refused with the reason).

A folder is ready once it has not changed between two looks and its newest file is older
than a quiet period, so an export still being copied (by `cp -p` or rsync, which keep old
modification times) is not picked up half-written. A folder the DICOM node handed on is
ready at the first look: the node stamps it (`COMPLETE_STAMP`, newer than every file) once
the study is complete, so the sensor need not wait again. Folders are known by their pseudonyms
only: folder names may be MRNs, and what the scan remembers is shown in the UI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cass_pipeline.domain.cohort.headers import is_bitmap_file, read_header, tag
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.cohort.listing import list_files


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


#: The hidden file the DICOM node writes into a study folder it has handed on complete.
COMPLETE_STAMP = ".cass-complete"


def stamped_complete(folder: Path) -> bool:
    """Whether the node's stamp is newer than every other file of the folder."""
    stamp = folder / COMPLETE_STAMP
    if not stamp.is_file():
        return False
    stamped = stamp.stat().st_mtime
    return all(
        p.stat().st_mtime <= stamped for p in folder.rglob("*") if p.is_file() and p != stamp
    )


def study_id(folder: Path, pseudonym: Callable[[str], str]) -> str:
    """The keyed name of one inbox folder (one study): 'S' and 16 hex digits; the folder's
    own name may be an MRN or an accession number."""
    return "S" + pseudonym(f"inbox study {folder.name}")[1:]


def study_time(folder: Path) -> tuple[str, float]:
    """What orders a patient's studies: the StudyDate and StudyTime its DICOM files state
    (digits only), then when the folder last changed."""
    stated = ""
    for path in list_files(folder).files:
        if not is_bitmap_file(path) and (header := read_header(path)) is not None:
            date, time = tag(header, "StudyDate") or "", tag(header, "StudyTime") or ""
            stated = "".join(c for c in date + time if c.isdigit())
            break
    return stated, folder_state(folder)[1]


@dataclass(frozen=True)
class InboxStudy:
    """One inbox folder: its patient's pseudonym, its keyed study id, its folder."""

    patient: str
    study: str
    folder: Path


def inbox_studies(inbox: Path, pseudonym: Callable[[str], str]) -> list[InboxStudy]:
    """Every inbox folder as a study of its patient (several folders may share one)."""
    return [
        InboxStudy(pseudonym(folder_patient_key(f)), study_id(f, pseudonym), f)
        for f in patient_folders(inbox)
    ]


def newest_studies(studies: list[InboxStudy]) -> dict[str, InboxStudy]:
    """Each patient's newest study (by stated study date and time, then arrival): the one
    scored when one result per patient is asked for."""
    newest: dict[str, tuple[tuple[str, float], InboxStudy]] = {}
    for study in studies:
        when = study_time(study.folder)
        if study.patient not in newest or when > newest[study.patient][0]:
            newest[study.patient] = (when, study)
    return {patient: study for patient, (_, study) in newest.items()}


@dataclass
class InboxScan:
    """Studies ready for prediction, one per patient (its newest), those refused with the
    reason, those still changing, and the memory for the next scan (keyed names only)."""

    ready: list[InboxStudy] = field(default_factory=list)
    refused: list[tuple[InboxStudy, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    memory: dict = field(default_factory=lambda: {"pending": {}, "done": {}})


def scan_inbox(
    inbox: Path,
    memory: dict,
    pseudonym: Callable[[str], str],
    now: float,
    quiet_s: float,
    refusal: Callable[[Path], str | None] = lambda folder: None,
) -> InboxScan:
    """Which studies are new or changed and now stable; each is then scored if it is its
    patient's newest study and `refusal` finds nothing wrong with it, else refused with the
    reason. Every study is looked at once per state: a scored or refused study is not looked
    at again until it changes. `memory` is the last scan's."""
    pending, done = dict(memory.get("pending", {})), dict(memory.get("done", {}))
    scan = InboxScan(memory={"pending": {}, "done": done})
    studies = inbox_studies(inbox, pseudonym)
    newest = None
    for study in studies:
        state, latest = folder_state(study.folder)
        if not latest or done.get(study.study) == state:
            continue
        settled = pending.get(study.study) == state and now - latest >= quiet_s
        if not settled and not stamped_complete(study.folder):
            scan.waiting.append(study.study)
            scan.memory["pending"][study.study] = state
            continue
        done[study.study] = state
        newest = newest if newest is not None else newest_studies(studies)
        if newest[study.patient] != study:
            scan.refused.append((study, "a newer study of this patient is in the inbox"))
        elif problem := refusal(study.folder):
            scan.refused.append((study, problem))
        else:
            scan.ready.append(study)
    return scan


def chosen_study(
    inbox: Path, patient: str, pseudonym: Callable[[str], str], study: str | None = None
) -> InboxStudy | None:
    """The patient's inbox study named `study`, else the patient's newest."""
    studies = [s for s in inbox_studies(inbox, pseudonym) if s.patient == patient]
    if study is not None:
        return next((s for s in studies if s.study == study), None)
    return newest_studies(studies).get(patient)

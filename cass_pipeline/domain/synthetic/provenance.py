"""Which patients of a raw folder the generator wrote, proven per patient by its marker.

Before it publishes a patient, the generator records in `.synth/<case>.json` the sha256 of
every file it is about to write (and of those it replaces); once they are in place it marks
the record complete. A patient is *generated* only while exactly those files are on disk with
that content: only such patients get the public pseudonym key, are skipped as done, or are
pruned. Files the generator did not write are never overwritten or deleted.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from cass_pipeline.domain.cohort.index import CohortIndex, index_cohort
from cass_pipeline.domain.privacy import Pseudonyms, load_secret
from cass_pipeline.domain.storage import file_digest
from cass_pipeline.layout import CENTRELINES, MPR, OVERLAYS, REPORTS, VOLUMES, RawLayout

MARKER_DIR = ".synth"
#: Folders beside `mpr/` that hold one file per patient, named `<case>.<suffix>`.
PER_PATIENT_FOLDERS = (REPORTS, VOLUMES, CENTRELINES, OVERLAYS)


class Provenance(enum.Enum):
    GENERATED = "exactly the files the generator wrote"
    INCOMPLETE = "written by the generator, some files missing or unfinished"
    FOREIGN = "holds files the generator did not write"
    ABSENT = "nothing on disk"


class ForeignFilesError(ValueError):
    """The generator was asked to write where files it did not write live."""


def marker_path(out_dir: Path, case: str) -> Path:
    return out_dir / MARKER_DIR / f"{case}.json"


def read_marker(out_dir: Path, case: str) -> dict | None:
    try:
        return json.loads(marker_path(out_dir, case).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def patient_files(out_dir: Path, case: str) -> list[str]:
    """Paths (relative to `out_dir`) of every file on disk that belongs to patient `case`."""
    found = [p for p in RawLayout(out_dir).mpr_folder(case).rglob("*") if p.is_file()]
    for folder in PER_PATIENT_FOLDERS:
        found += [p for p in (out_dir / folder).glob(f"{case}.*") if p.is_file()]
    return sorted(p.relative_to(out_dir).as_posix() for p in found)


def digests(root: Path, files: list[str]) -> dict[str, str]:
    return {rel: file_digest(root / rel) for rel in files}


def claimed_files(record: dict, case: str) -> dict[str, set[str | None]]:
    """Path -> the contents the generator may have left there (None: any, for a marker
    written before markers listed digests)."""
    if "files" not in record:
        legacy = [v["file"] for v in record.get("views", [])]
        relative = RawLayout(Path())
        legacy += [
            path.as_posix()
            for path in (
                relative.report_file(case),
                relative.volume_file(case),
                relative.centreline_file(case),
            )
        ]
        return {rel: {None} for rel in legacy}
    claimed: dict[str, set[str | None]] = {}
    for listing in (record["files"], record.get("replaces", {})):
        for rel, digest in listing.items():
            claimed.setdefault(rel, set()).add(digest)
    return claimed


def provenance(out_dir: Path, case: str) -> Provenance:
    """What the generator can prove about patient `case` in `out_dir`."""
    record = read_marker(out_dir, case)
    on_disk = digests(out_dir, patient_files(out_dir, case))
    if record is None:
        return Provenance.FOREIGN if on_disk else Provenance.ABSENT
    claimed = claimed_files(record, case)
    for rel, digest in on_disk.items():
        allowed = claimed.get(rel, set())
        if digest not in allowed and None not in allowed:
            return Provenance.FOREIGN
    if record.get("complete") and on_disk == record.get("files"):
        return Provenance.GENERATED
    return Provenance.INCOMPLETE


def missing_or_changed(out_dir: Path, case: str) -> list[str]:
    """Files the generator's complete record of `case` lists that are not on disk with that
    content (all of them when the record is missing or unfinished)."""
    record = read_marker(out_dir, case) or {}
    listed = record.get("files", {}) if record.get("complete") else {}
    if not listed:
        return [f"{MARKER_DIR}/{case}.json (no complete record)"]
    return [
        rel
        for rel, digest in listed.items()
        if not (out_dir / rel).is_file() or file_digest(out_dir / rel) != digest
    ]


def marked_cases(out_dir: Path) -> list[str]:
    """Cases that have a generator marker (whatever their files)."""
    return sorted(p.stem for p in (out_dir / MARKER_DIR).glob("*.json"))


def generated_patients(raw_dir: Path) -> frozenset[str]:
    """Cases whose files are exactly the generator's."""
    raw_dir = Path(raw_dir)
    return frozenset(
        c for c in marked_cases(raw_dir) if provenance(raw_dir, c) is Provenance.GENERATED
    )


def generated_files(raw_dir: Path) -> set[Path]:
    """Every file of the generated patients of `raw_dir`."""
    return {
        raw_dir / rel
        for case in generated_patients(raw_dir)
        for rel in read_marker(raw_dir, case)["files"]
    }


def public_keys(raw_dir: Path, index: CohortIndex) -> frozenset[str]:
    """Keys of the patients all of whose files (images, volume, report) the generator
    wrote: the only ones that may be pseudonymised with the public synthetic key."""
    generated = generated_files(Path(raw_dir))
    return frozenset(
        patient.key
        for patient in index.patients.values()
        if patient.sources() and all(path in generated for path in patient.sources())
    )


def cohort_pseudonyms(
    raw_dir: Path,
    key_file: Path,
    env_value: str | None = None,
    index: CohortIndex | None = None,
) -> Pseudonyms:
    """Pseudonyms for the patients of `raw_dir`: a configured key for everyone; else the
    public synthetic key for generated patients, the key file's secret for all others."""
    if env_value:
        return Pseudonyms(load_secret(key_file, env_value))
    index = index or index_cohort(Path(raw_dir))
    return Pseudonyms(load_secret(key_file), public_keys(Path(raw_dir), index))


def folder_pseudonyms(folder: Path, key_file: Path, env_value: str | None = None) -> Pseudonyms:
    """Pseudonyms for one patient's folder: a folder inside a raw export (`raw/mpr/<patient>`)
    may be a generated patient; any other is keyed by the secret alone."""
    if folder.parent.name == MPR:
        return cohort_pseudonyms(folder.parent.parent, key_file, env_value)
    return Pseudonyms(load_secret(key_file, env_value))

"""What CASS expects in a raw folder, what it holds, and when an ingestion found too little."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cass_pipeline.domain.cohort.index import CohortIndex
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.layout import RAW_FOLDERS

EXPECTED_IMAGES = (
    "raw/mpr/<patient>/<series>/<view>.dcm|.png, one folder per patient "
    "(or raw/volumes/<patient>.nii.gz with raw/centrelines/<patient>.json)"
)
EXPECTED_REPORTS = "raw/reports/<patient>.txt, one free-text report per patient"
#: A rerun that keeps fewer than this share of the previous patients is taken for a mistake
#: (wrong folder, wrong layout, a half-copied export), not for a smaller cohort.
MIN_KEPT_SHARE = 0.5


def too_few_patients(found: int, previous: int | None) -> str | None:
    """Why `found` patients is not a plausible ingestion (None when it is)."""
    if found == 0:
        return "no patient was ingested"
    if previous and found < MIN_KEPT_SHARE * previous:
        return f"{found} patients, against {previous} in the previous materialisation"
    return None


def files_outside(raw: Path) -> int:
    """Files in sub-folders of `raw` other than the raw folders CASS reads (a wrong layout;
    hidden paths and top-level files such as a cohort summary are not counted)."""
    if not raw.is_dir():
        return 0
    count = 0
    for path in raw.rglob("*"):
        parts = path.relative_to(raw).parts
        hidden = any(part.startswith(".") for part in parts)
        count += path.is_file() and not hidden and len(parts) > 1 and parts[0] not in RAW_FOLDERS
    return count


@dataclass(frozen=True)
class RawPatient:
    """Where one patient's raw files are, under the pseudonym the pipeline gives it."""

    pseudonym: str
    key: str
    images: Path | None
    report: str | None
    public_key: bool


def raw_patients(index: CohortIndex, pseudonyms: Pseudonyms) -> list[RawPatient]:
    """Every patient of an indexed raw folder, sorted by key."""
    return [
        RawPatient(
            pseudonyms(p.key),
            p.key,
            p.root or p.volume,
            p.report.origin if p.report else None,
            pseudonyms.uses_public_key(p.key),
        )
        for p in index.patients.values()
    ]

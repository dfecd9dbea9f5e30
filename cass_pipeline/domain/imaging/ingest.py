"""Cohort folder -> cleaned image store (one uint8 .npy per patient) + manifest + rejects.

Input layout: `mpr/<patient>/<series>/<files>` (DICOM, PNG or JPEG; a series may also be a
multi-frame DICOM), and optionally `volumes/<patient>.nii.gz` + `centrelines/<patient>.json`
for patients without an MPR folder: their views are rendered by the CPR library and take the
same cleanup path. Patients are processed in parallel, each by one worker holding only that
patient's images; a patient whose sources and settings are unchanged is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH
from cass_pipeline.domain.cohort.index import CohortIndex, index_cohort
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.pixel_text import (
    PIXEL_TEXT_VERSION,
    check_pixels,
    first_middle_last,
)
from cass_pipeline.domain.imaging.readers import set_aside_reason
from cass_pipeline.domain.imaging.views import (
    PatientSource,
    View,
    assign_branches,
    patient_views,
    reject,
)
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.storage import atomic_path, write_text_atomic
from cass_pipeline.domain.workers import worker_pool
from cass_pipeline.layout import RawLayout, store_entry, store_name

STATE_DIR = ".ingest"


def discover(raw_dir: Path, index: CohortIndex | None = None) -> list[PatientSource]:
    """Patients with images (or a volume) in a cohort folder, sorted by key."""
    index = index or index_cohort(raw_dir)
    return [PatientSource.of(p) for p in index.patients.values() if p.files or p.volume is not None]


@dataclass
class PatientResult:
    """Manifest rows and reject rows of one patient."""

    patient_id: str
    rows: list[dict]
    rejects: list[dict]
    skipped: bool = False
    #: What OCR read on the patient's stored views (`PixelText.to_json`), or why it could not.
    pixel_text: dict | None = None


def unchanged_state(store_dir: Path, pid: str, fingerprint: str) -> dict | None:
    """The saved state of a patient in `store_dir` when it was made from the same sources and
    settings and its store is there."""
    state_path = store_dir / STATE_DIR / f"{pid}.json"
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text())
    store = store_dir / store_name(pid)
    if state["fingerprint"] == fingerprint and (store.is_file() or not state["rows"]):
        return state
    return None


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (stores are never rewritten in place), or a copy
    where the file system cannot link; written atomically."""
    with atomic_path(target, suffix=target.suffix) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def ingest_patient(
    source: PatientSource,
    store_dir: Path,
    pseudonyms: Pseudonyms,
    config: IngestConfig,
    previous_store: Path | None = None,
) -> PatientResult:
    """Clean one patient's views into `<store>/<patient_id>.npy`; skipped when unchanged in
    `store_dir`, linked from `previous_store` (the published generation) when unchanged there."""
    cv2.setNumThreads(1)
    pid = pseudonyms(source.key)
    state_path = store_dir / STATE_DIR / f"{pid}.json"
    # The identifiers looked for enter keyed, so that the state names none of them.
    looked_for = pseudonyms("\x1f".join(sorted(source.identifiers)))
    fingerprint = (
        f"{source.fingerprint()}-{config.fingerprint()}-{looked_for}-v{PIXEL_TEXT_VERSION}"
    )
    state = unchanged_state(store_dir, pid, fingerprint)
    if state is None and previous_store is not None:
        state = unchanged_state(previous_store, pid, fingerprint)
        if state is not None:
            if state["rows"]:
                link_or_copy(previous_store / store_name(pid), store_dir / store_name(pid))
            link_or_copy(previous_store / STATE_DIR / f"{pid}.json", state_path)
    if state is not None:
        return PatientResult(pid, state["rows"], state["rejects"], True, state.get("pixel_text"))

    views, rejects = patient_views(source, pid, config)
    by_branch, more = assign_branches(views, pid, config)
    rejects += more

    rows, images = manifest_rows(by_branch, pid, config)
    identifiers = source.identifiers.union(*(v.identifiers for v in views))
    pixel_text = stored_pixel_text(by_branch, identifiers)
    store = store_dir / store_name(pid)
    if images:
        with atomic_path(store, suffix=".npy") as tmp:
            np.save(tmp, np.stack(images))
    else:
        store.unlink(missing_ok=True)
    state = {"fingerprint": fingerprint, "rows": rows, "rejects": rejects}
    write_text_atomic(state_path, json.dumps(state | {"pixel_text": pixel_text}))
    return PatientResult(pid, rows, rejects, pixel_text=pixel_text)


def stored_pixel_text(by_branch: dict[str, list[View]], identifiers: Iterable[str]) -> dict:
    """OCR of the first, middle and last stored view of each branch (`check_pixels`), keyed
    `<branch>/<view index>`."""
    sample = {
        f"{branch}/{k}": by_branch[branch][k].image
        for branch in sorted(by_branch)
        for k in first_middle_last(len(by_branch[branch]))
    }
    return check_pixels(sample, identifiers).to_json()


def manifest_rows(
    by_branch: dict[str, list[View]], pid: str, config: IngestConfig
) -> tuple[list[dict], list[np.ndarray]]:
    """The manifest rows of a patient's placed views, branch by branch, and their images in
    store order."""
    rows, images = [], []
    for branch in sorted(by_branch):
        for view_index, view in enumerate(by_branch[branch]):
            rows.append(
                {
                    "patient_id": pid,
                    "artery": ARTERY_OF_BRANCH[branch],
                    "branch": branch,
                    "view_index": view_index,
                    "series_name": view.series_name,
                    "source_kind": view.kind,
                    "source_path": view.source_path,
                    "source_sha256": view.source_sha256,
                    "frame": view.frame,
                    "store_path": store_entry(pid),
                    "store_index": len(images),
                    "source_height": view.height,
                    "source_width": view.width,
                    "size": config.cleanup.size,
                    "text_pixels": view.text_pixels,
                    "masked_pixels": view.masked_pixels,
                    "cleanup_fingerprint": config.cleanup.fingerprint(),
                }
            )
            images.append(view.image)
    return rows, images


def ingest_cohort(
    raw_dir: Path,
    store_dir: Path,
    pseudonyms: Pseudonyms,
    config: IngestConfig,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    index: CohortIndex | None = None,
    pool: Executor | None = None,
    previous_store: Path | None = None,
    also: Sequence[PatientSource] = (),
) -> Iterator[PatientResult]:
    """Patient results in key order, then those of the sources `also` names (studies from
    outside the raw folder: the patients readers labelled), then one result holding the files
    the index set aside (second studies, files without a patient); stores of patients gone
    are removed. Patients run on `pool` when given (a cluster's executor), else on `workers`
    local processes; a patient unchanged in `previous_store` is linked from there."""
    index = index or index_cohort(raw_dir)
    sources = discover(raw_dir, index) + list(also)
    store_dir.mkdir(parents=True, exist_ok=True)
    keep = {pseudonyms(s.key) for s in sources}
    for stale in [*store_dir.glob("*.npy"), *(store_dir / STATE_DIR).glob("*.json")]:
        if stale.stem not in keep:
            stale.unlink()
    work = partial(
        ingest_patient,
        store_dir=store_dir,
        pseudonyms=pseudonyms,
        config=config,
        previous_store=previous_store,
    )
    workers = min(workers or os.cpu_count() or 1, max(1, len(sources)))
    with ExitStack() as stack:
        if pool is None and workers > 1:
            pool = stack.enter_context(worker_pool(workers))
        results = pool.map(work, sources) if pool is not None else map(work, sources)
        for done, result in enumerate(results, start=1):
            if progress:
                progress(done, len(sources))
            yield result
    set_aside = [
        reject(
            pseudonyms(r.key) if r.key else None,
            outside_path(r.path, RawLayout(raw_dir).mpr, pseudonyms(r.key) if r.key else None),
            None,
            None,
            set_aside_reason(r),
        )
        for r in index.rejects
        if r.kind == "image"
    ]
    if set_aside:
        yield PatientResult("", [], set_aside)


def outside_path(path: Path, mpr: Path, pseudonym: str | None) -> str:
    """A set-aside file's path under `mpr/`, its top folder (which may be named after the
    patient) replaced by the pseudonym; `cass inspect` maps it back."""
    parts = path.relative_to(mpr).parts
    if len(parts) > 1 or pseudonym is not None:  # a patient's folder, or a file in it
        parts = (pseudonym or "<unknown patient>", *parts[1:])
    return "/".join(parts)

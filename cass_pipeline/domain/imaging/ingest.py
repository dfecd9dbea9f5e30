"""Cohort folder -> cleaned image store (one uint8 .npy per patient) + manifest + rejects.

Input layout: `mpr/<patient>/<series>/<files>` (DICOM, PNG or JPEG; a series may also be a
multi-frame DICOM), and optionally `volumes/<patient>.nii.gz` + `centrelines/<patient>.json`
for patients without an MPR folder: their views are rendered by the CPR library and take the
same cleanup path. Patients are processed in parallel, each by one worker holding only that
patient's images; a patient whose sources and settings are unchanged is skipped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH
from cass_pipeline.domain.cohort.index import CohortIndex, IndexedPatient, index_cohort
from cass_pipeline.domain.imaging.cleanup import CleanupConfig, clean_image, ct_window_to_uint8
from cass_pipeline.domain.imaging.cpr import curved_mpr_views
from cass_pipeline.domain.imaging.readers import (
    ImageReadError,
    check_frame,
    read_image,
    set_aside_reason,
)
from cass_pipeline.domain.imaging.series_names import DEFAULT_ALIASES, branch_of_series
from cass_pipeline.domain.imaging.volume_io import read_centrelines, read_nifti
from cass_pipeline.domain.options import option
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.storage import atomic_path, settings_hash, write_text_atomic

STATE_DIR = ".ingest"
#: The ingestion settings, saved in the images folder beside the store and the manifest.


@dataclass(frozen=True)
class IngestConfig:
    """Ingestion settings (all recorded in each patient's state)."""

    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    min_views: int = option(4, "views a branch needs", min=1)
    volume_views: int = 8
    volume_width_mm: float = 24.0
    volume_pixel_mm: float = 0.25
    aliases: str = str(DEFAULT_ALIASES)
    site_aliases: str | None = None

    def fingerprint(self) -> str:
        tables = Path(self.aliases).read_bytes()
        if self.site_aliases:
            tables += Path(self.site_aliases).read_bytes()
        return settings_hash({**asdict(self), "cleanup": self.cleanup.fingerprint()}, tables)

    def branch_of(self, series_name: str | None) -> str | None:
        """The canonical branch of a series name through the alias tables."""
        site = Path(self.site_aliases) if self.site_aliases else None
        return branch_of_series(series_name, Path(self.aliases), site)

    def write(self, path: Path) -> None:
        """Saved beside the image store, so that training bundles what the store was made with."""
        write_text_atomic(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> IngestConfig:
        data = json.loads(path.read_text())
        return cls(cleanup=CleanupConfig(**data.pop("cleanup")), **data)


@dataclass(frozen=True)
class SourceFile:
    """One file of a patient's export: its path inside the patient's folder, the series it
    belongs to (folder or stated name), its bytes, and optionally a stated canonical branch
    (which skips the alias table) and view order."""

    path: str
    series: str
    data: bytes
    branch: str | None = None
    view_index: int | None = None


@dataclass
class PatientSource:
    """Where a patient's images come from: files under a root folder (the patient's folder
    in a folder layout; paths in outputs are relative to it), or a volume with centrelines."""

    key: str
    mpr_dir: Path | None = None
    volume: Path | None = None
    centrelines: Path | None = None
    listed: tuple[Path, ...] | None = None

    def files(self) -> list[Path]:
        """The listed files, else every file under `mpr_dir`, else the volume's two files."""
        if self.listed is not None:
            return list(self.listed)
        if self.mpr_dir is not None:
            return sorted(
                p for p in self.mpr_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        return [p for p in (self.volume, self.centrelines) if p is not None]

    def source_files(self) -> Iterator[SourceFile]:
        """The image files, read one at a time."""
        for path in self.files():
            series = path.parent.relative_to(self.mpr_dir).as_posix()
            yield SourceFile(path.relative_to(self.mpr_dir).as_posix(), series, path.read_bytes())

    def fingerprint(self) -> str:
        """Changes when any source file is added, removed, resized or touched."""
        digest = hashlib.sha256()
        base = self.mpr_dir or (self.volume.parent.parent if self.volume else Path("."))
        for path in self.files():
            stat = path.stat()
            digest.update(f"{path.relative_to(base)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    @classmethod
    def of(cls, patient: IndexedPatient) -> PatientSource:
        if patient.files:
            return cls(patient.key, mpr_dir=patient.root, listed=tuple(patient.files))
        return cls(patient.key, volume=patient.volume, centrelines=patient.centrelines)


def discover(raw_dir: Path, index: CohortIndex | None = None) -> list[PatientSource]:
    """Patients with images (or a volume) in a cohort folder, sorted by key."""
    index = index or index_cohort(raw_dir)
    return [PatientSource.of(p) for p in index.patients.values() if p.files or p.volume is not None]


@dataclass
class View:
    """One cleaned view before it is placed in the store."""

    series: str
    series_name: str
    source_path: str
    source_sha256: str
    pixel_sha256: str
    frame: int
    order: tuple
    kind: str
    height: int
    width: int
    image: np.ndarray
    text_pixels: int
    masked_pixels: int
    branch: str | None = None


@dataclass
class PatientResult:
    """Manifest rows and reject rows of one patient."""

    patient_id: str
    rows: list[dict]
    rejects: list[dict]
    skipped: bool = False


def reject(
    patient_id: str, source_path: str, series_name: str | None, branch: str | None, reason: str
) -> dict:
    return {
        "patient_id": patient_id,
        "source_path": source_path,
        "series_name": series_name,
        "branch": branch,
        "reason": reason,
    }


def read_views(
    files: Iterable[SourceFile],
    pid: str,
    config: IngestConfig,
    threads: int = 1,
    on_file: Callable[[], None] | None = None,
) -> tuple[list[View], list[dict]]:
    """Every decodable, non-constant frame of the files, cleaned (on `threads` threads);
    `on_file` is called as each file is done."""

    def work(file: SourceFile) -> tuple[list[View], list[dict]]:
        result = read_file_views(file, pid, config)
        if on_file is not None:
            on_file()
        return result

    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, files))
    else:
        results = map(work, files)
    views, rejects = [], []
    for file_views, file_rejects in results:
        views += file_views
        rejects += file_rejects
    return views, rejects


def read_file_views(file: SourceFile, pid: str, config: IngestConfig) -> tuple[list[View], list]:
    """The cleaned views of one file, or its reject rows."""
    try:
        image = read_image(file.data, Path(file.path).suffix)
    except ImageReadError as error:
        return [], [reject(pid, file.path, file.series, file.branch, str(error))]
    name = image.series_description or file.series
    views, rejects = [], []
    for frame_index, frame in enumerate(image.frames):
        try:
            check_frame(frame)
        except ImageReadError as error:
            rejects.append(reject(pid, file.path, name, file.branch, str(error)))
            continue
        cleaned, stats = clean_image(frame, config.cleanup)
        first = file.view_index if file.view_index is not None else image.instance_number
        views.append(
            View(
                series=image.series_uid or file.series,
                series_name=name,
                source_path=file.path,
                source_sha256=hashlib.sha256(file.data).hexdigest(),
                pixel_sha256=hashlib.sha256(frame.tobytes()).hexdigest(),
                frame=frame_index,
                order=(
                    first if first is not None else 10**9,
                    image.content_time,
                    Path(file.path).name,
                    frame_index,
                ),
                kind=image.kind,
                height=frame.shape[0],
                width=frame.shape[1],
                image=cleaned,
                text_pixels=stats.text_pixels,
                masked_pixels=stats.masked_pixels,
                branch=file.branch,
            )
        )
    return views, rejects


def render_volume_views(source: PatientSource, config: IngestConfig) -> list[View]:
    """Views of every centreline of the volume, through the CPR library, then cleaned."""
    volume = read_nifti(source.volume)
    digest = hashlib.sha256(source.volume.read_bytes()).hexdigest()
    views = []
    for name, points in read_centrelines(source.centrelines).items():
        cpr = curved_mpr_views(
            volume, points, config.volume_views, config.volume_width_mm, config.volume_pixel_mm
        )
        for k, hu in enumerate(cpr.images):
            frame = ct_window_to_uint8(hu)
            cleaned, stats = clean_image(frame, config.cleanup)
            views.append(
                View(
                    series=name,
                    series_name=name,
                    source_path=f"{source.volume.name}#{name}/{k}",
                    source_sha256=digest,
                    pixel_sha256=hashlib.sha256(frame.tobytes()).hexdigest(),
                    frame=k,
                    order=(k, "", name, k),
                    kind="volume",
                    height=frame.shape[0],
                    width=frame.shape[1],
                    image=cleaned,
                    text_pixels=stats.text_pixels,
                    masked_pixels=stats.masked_pixels,
                )
            )
    return views


def assign_branches(
    views: list[View], pid: str, config: IngestConfig
) -> tuple[dict[str, list[View]], list[dict]]:
    """Series -> branch through the alias table; unknown names, duplicate views, second
    series of a branch and branches with too few views become rejects."""
    rejects = []
    by_series: dict[str, list[View]] = {}
    seen: dict[str, str] = {}
    for view in views:
        if view.pixel_sha256 in seen:
            rejects.append(
                reject(
                    pid,
                    view.source_path,
                    view.series_name,
                    None,
                    f"duplicate view of {seen[view.pixel_sha256]}",
                )
            )
            continue
        seen[view.pixel_sha256] = view.source_path
        by_series.setdefault(view.series, []).append(view)
    by_branch: dict[str, list[View]] = {}
    for series_views in sorted(by_series.values(), key=lambda v: (-len(v), v[0].series_name)):
        name, stated = series_views[0].series_name, series_views[0].branch
        if stated is not None:
            branch = stated if stated in ARTERY_OF_BRANCH else None
        else:
            branch = config.branch_of(name)
            folder = Path(series_views[0].source_path).parent.name
            if branch is None and folder != name:
                branch = config.branch_of(folder)
        if branch is None:
            reason = (
                f"unknown branch {stated!r}"
                if stated is not None
                else f"unknown series name {name!r}"
            )
            rejects += [reject(pid, v.source_path, name, None, reason) for v in series_views]
        elif branch in by_branch:
            rejects += [
                reject(
                    pid,
                    v.source_path,
                    name,
                    branch,
                    f"second series for {branch}; kept {by_branch[branch][0].series_name!r}",
                )
                for v in series_views
            ]
        else:
            by_branch[branch] = sorted(series_views, key=lambda v: v.order)
    for branch in list(by_branch):
        if len(by_branch[branch]) < config.min_views:
            count = len(by_branch[branch])
            rejects += [
                reject(
                    pid,
                    v.source_path,
                    v.series_name,
                    branch,
                    f"{branch} has {count} views, fewer than {config.min_views}",
                )
                for v in by_branch.pop(branch)
            ]
    return by_branch, rejects


def ingest_patient(
    source: PatientSource, store_dir: Path, pseudonyms: Pseudonyms, config: IngestConfig
) -> PatientResult:
    """Clean one patient's views into `<store>/<patient_id>.npy` (skipped when unchanged)."""
    cv2.setNumThreads(1)
    pid = pseudonyms(source.key)
    state_path = store_dir / STATE_DIR / f"{pid}.json"
    fingerprint = f"{source.fingerprint()}-{config.fingerprint()}"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        store = store_dir / f"{pid}.npy"
        if state["fingerprint"] == fingerprint and (store.is_file() or not state["rows"]):
            return PatientResult(pid, state["rows"], state["rejects"], skipped=True)

    if source.mpr_dir is not None:
        views, rejects = read_views(source.source_files(), pid, config)
    else:
        try:
            views, rejects = render_volume_views(source, config), []
        except (OSError, ValueError, KeyError) as error:
            views, rejects = (
                [],
                [
                    reject(
                        pid,
                        source.volume.name,
                        None,
                        None,
                        f"unreadable volume or centrelines: {error}",
                    )
                ],
            )
    by_branch, more = assign_branches(views, pid, config)
    rejects += more

    rows, images = [], []
    store_rel = f"images/store/{pid}.npy"
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
                    "store_path": store_rel,
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
    store = store_dir / f"{pid}.npy"
    if images:
        with atomic_path(store, suffix=".npy") as tmp:
            np.save(tmp, np.stack(images))
    else:
        store.unlink(missing_ok=True)
    write_text_atomic(
        state_path, json.dumps({"fingerprint": fingerprint, "rows": rows, "rejects": rejects})
    )
    return PatientResult(pid, rows, rejects)


def ingest_cohort(
    raw_dir: Path,
    store_dir: Path,
    pseudonyms: Pseudonyms,
    config: IngestConfig,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    index: CohortIndex | None = None,
    pool: Executor | None = None,
) -> Iterator[PatientResult]:
    """Patient results in key order, then one result holding the files the index set aside
    (second studies, files without a patient); stores of patients gone are removed. Patients
    run on `pool` when given (a cluster's executor), else on `workers` local processes."""
    index = index or index_cohort(raw_dir)
    sources = discover(raw_dir, index)
    store_dir.mkdir(parents=True, exist_ok=True)
    keep = {pseudonyms(s.key) for s in sources}
    for stale in [*store_dir.glob("*.npy"), *(store_dir / STATE_DIR).glob("*.json")]:
        if stale.stem not in keep:
            stale.unlink()
    work = partial(ingest_patient, store_dir=store_dir, pseudonyms=pseudonyms, config=config)
    workers = min(workers or os.cpu_count() or 1, max(1, len(sources)))
    own_pool = None
    if pool is None and workers > 1:
        pool = own_pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        )
    results = pool.map(work, sources) if pool is not None else map(work, sources)
    try:
        for done, result in enumerate(results, start=1):
            if progress:
                progress(done, len(sources))
            yield result
    finally:
        if own_pool is not None:
            own_pool.shutdown()
    set_aside = [
        reject(
            pseudonyms(r.key) if r.key else None,
            outside_path(r.path, raw_dir / "mpr", pseudonyms(r.key) if r.key else None),
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
    if len(parts) > 1:
        parts = (pseudonym or "<unknown patient>", *parts[1:])
    return "/".join(parts)

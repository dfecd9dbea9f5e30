"""A patient's files to cleaned views, each placed on its canonical branch: the one path for
ingestion and prediction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH
from cass_pipeline.domain.cohort.index import IndexedPatient
from cass_pipeline.domain.cohort.listing import list_files, unreadable_reason
from cass_pipeline.domain.cohort.report_sources import report_identifiers
from cass_pipeline.domain.imaging.cleanup import (
    clean_image,
    ct_window_to_uint8,
    persistent_overlay,
)
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.cpr import curved_mpr_views
from cass_pipeline.domain.imaging.readers import (
    ImageReadError,
    SourceImage,
    check_frame,
    read_image,
)
from cass_pipeline.domain.imaging.volume_io import read_centrelines, read_nifti
from cass_pipeline.domain.privacy import redacted


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
    #: Why the file could not be read (its bytes are then empty): it becomes a reject.
    problem: str | None = None
    #: Whether `series` (and `branch`) were stated by a request rather than taken from a
    #: folder: they are then checked against the file's own SeriesDescription.
    stated: bool = False


@dataclass
class PatientSource:
    """Where a patient's images come from: files under a root folder (the patient's folder
    in a folder layout; paths in outputs are relative to it), or a volume with centrelines."""

    key: str
    mpr_dir: Path | None = None
    volume: Path | None = None
    centrelines: Path | None = None
    listed: tuple[Path, ...] | None = None
    #: The key and the report header's identifiers (`known_identifiers`), which the pixel
    #: check looks for beside those of the DICOM headers; in memory only.
    identifiers: frozenset[str] = frozenset()

    def files(self) -> list[Path]:
        """The listed files, else every file under `mpr_dir`, else the volume's two files."""
        if self.listed is not None:
            return list(self.listed)
        if self.mpr_dir is not None:
            return list_files(self.mpr_dir).files
        return [p for p in (self.volume, self.centrelines) if p is not None]

    def source_files(self) -> Iterator[SourceFile]:
        """The image files, read one at a time; a file or folder this account cannot read
        comes with its `problem`."""
        if self.listed is None and self.mpr_dir is not None:
            listing = list_files(self.mpr_dir)
            paths, unreadable = listing.files, listing.unreadable
        else:
            paths, unreadable = self.files(), []
        for path, reason in unreadable:
            yield SourceFile(path.relative_to(self.mpr_dir).as_posix(), "", b"", problem=reason)
        for path in paths:
            name = path.relative_to(self.mpr_dir).as_posix()
            series = path.parent.relative_to(self.mpr_dir).as_posix()
            try:
                data = path.read_bytes()
            except OSError as error:
                yield SourceFile(name, series, b"", problem=unreadable_reason(path, error))
                continue
            yield SourceFile(name, series, data)

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
        known = known_identifiers(patient)
        if patient.files:
            return cls(patient.key, patient.root, listed=tuple(patient.files), identifiers=known)
        return cls(
            patient.key, volume=patient.volume, centrelines=patient.centrelines, identifiers=known
        )


def known_identifiers(patient: IndexedPatient) -> frozenset[str]:
    """What identifies a patient besides the DICOM headers: the key (the PatientID, else the
    report's MRN, else the folder's name) and the identifiers the report's header states."""
    found = {patient.key}
    if patient.report is not None:
        found |= report_identifiers(patient.report)
    return frozenset(found)


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
    identifiers: frozenset[str] = frozenset()


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
    """Every decodable, non-constant frame of the files, cleaned (on `threads` threads) with
    what the frames of its series show in the same place (`persistent_overlay`); `on_file` is
    called as each file is done."""

    def decode(file: SourceFile) -> tuple[SourceFile, SourceImage | None, list[dict]]:
        if file.problem is not None:
            return file, None, [reject(pid, file.path, file.series, file.branch, file.problem)]
        try:
            return file, read_image(file.data, Path(file.path).suffix), []
        except ImageReadError as error:
            return file, None, [reject(pid, file.path, file.series, file.branch, str(error))]

    with ThreadPoolExecutor(max(1, threads)) as pool:
        decoded = list(pool.map(decode, files))
        series: dict[str, list[np.ndarray]] = {}
        for file, image, _ in decoded:
            if image is not None:
                series.setdefault(image.series_uid or file.series, []).extend(image.frames)
        steady = {key: persistent_overlay(frames) for key, frames in series.items()}

        def clean(item) -> tuple[list[View], list[dict]]:
            file, image, rejects = item
            if image is not None:
                series_overlay = steady[image.series_uid or file.series]
                views, rejects = file_views(file, image, pid, config, series_overlay)
            else:
                views = []
            if on_file is not None:
                on_file()
            return views, rejects

        results = list(pool.map(clean, decoded))
    views, rejects = [], []
    for found, file_rejects in results:
        views += found
        rejects += file_rejects
    return views, rejects


def file_views(
    file: SourceFile,
    image: SourceImage,
    pid: str,
    config: IngestConfig,
    persistent: np.ndarray | None = None,
) -> tuple[list[View], list]:
    """The cleaned views of one decoded file (the overlay its series shows in `persistent`
    removed too), or its reject rows."""
    if file.stated and (contradiction := stated_contradiction(file, image, config)):
        return [], [reject(pid, file.path, file.series, file.branch, contradiction)]
    name = (file.series if file.stated else None) or image.series_description or file.series
    name = redacted(name, image.identifiers)  # workstations write names into descriptions
    views, rejects = [], []
    for frame_index, frame in enumerate(image.frames):
        try:
            check_frame(frame)
        except ImageReadError as error:
            rejects.append(reject(pid, file.path, name, file.branch, str(error)))
            continue
        hints = image.hints(frame_index, persistent)
        cleaned, stats = clean_image(frame, config.cleanup, hints)
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
                identifiers=image.identifiers,
            )
        )
    return views, rejects


def stated_contradiction(file: SourceFile, image: SourceImage, config: IngestConfig) -> str | None:
    """Why a request's branch or series name cannot be taken for the file: the file's own
    SeriesDescription names another branch (None when they agree or either is unknown)."""
    own = config.branch_of(image.series_description)
    stated = file.branch or config.branch_of(file.series)
    if own is None or stated is None or own == stated:
        return None
    said = "branch" if file.branch else "series_name"
    return (
        f"the request's {said} says {stated}, the file's SeriesDescription says {own}: send "
        "the file's series (or no series_name, to use the file's own)"
    )


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


def patient_views(
    source: PatientSource, pid: str, config: IngestConfig
) -> tuple[list[View], list[dict]]:
    """A patient's cleaned views, read from its files, else rendered from its volume."""
    if source.mpr_dir is not None:
        return read_views(source.source_files(), pid, config)
    try:
        return render_volume_views(source, config), []
    except (OSError, ValueError, KeyError) as error:
        reason = f"unreadable volume or centrelines: {error}"
        return [], [reject(pid, source.volume.name, None, None, reason)]


def assign_branches(
    views: list[View], pid: str, config: IngestConfig
) -> tuple[dict[str, list[View]], list[dict]]:
    """Series -> branch through the alias table; duplicate views, unknown names, second
    series of a branch and branches with too few views become rejects."""
    by_series, duplicates = unique_views_by_series(views, pid)
    by_branch, unplaced = series_on_branches(by_series, pid, config)
    by_branch, too_few = with_enough_views(by_branch, pid, config.min_views)
    return by_branch, duplicates + unplaced + too_few


def unique_views_by_series(views: list[View], pid: str) -> tuple[dict[str, list[View]], list]:
    """Views grouped by series; a view whose pixels were seen before is a reject."""
    rejects = []
    by_series: dict[str, list[View]] = {}
    seen: dict[str, str] = {}
    for view in views:
        if view.pixel_sha256 in seen:
            reason = f"duplicate view of {seen[view.pixel_sha256]}"
            rejects.append(reject(pid, view.source_path, view.series_name, None, reason))
            continue
        seen[view.pixel_sha256] = view.source_path
        by_series.setdefault(view.series, []).append(view)
    return by_series, rejects


def series_branch(series_views: list[View], config: IngestConfig) -> str | None:
    """A series' canonical branch: the one its files state, else by its name or folder."""
    first = series_views[0]
    if first.branch is not None:
        return first.branch if first.branch in ARTERY_OF_BRANCH else None
    return config.branch_of_series(first.series_name, Path(first.source_path).parent.name)


def series_on_branches(
    by_series: dict[str, list[View]], pid: str, config: IngestConfig
) -> tuple[dict[str, list[View]], list[dict]]:
    """Each series on its branch, largest first, its views in order; a series of no known
    branch, or a second one of a branch, is a reject."""
    rejects = []
    by_branch: dict[str, list[View]] = {}
    for series_views in sorted(by_series.values(), key=lambda v: (-len(v), v[0].series_name)):
        name, stated = series_views[0].series_name, series_views[0].branch
        branch = series_branch(series_views, config)
        if branch is None:
            reason = (
                f"unknown branch {stated!r}"
                if stated is not None
                else f"unknown series name {name!r}"
            )
            rejects += [reject(pid, v.source_path, name, None, reason) for v in series_views]
        elif branch in by_branch:
            reason = f"second series for {branch}; kept {by_branch[branch][0].series_name!r}"
            rejects += [reject(pid, v.source_path, name, branch, reason) for v in series_views]
        else:
            by_branch[branch] = sorted(series_views, key=lambda v: v.order)
    return by_branch, rejects


def with_enough_views(
    by_branch: dict[str, list[View]], pid: str, min_views: int
) -> tuple[dict[str, list[View]], list[dict]]:
    """The branches with at least `min_views` views; the views of the others are rejects."""
    kept, rejects = {}, []
    for branch, views in by_branch.items():
        if len(views) >= min_views:
            kept[branch] = views
            continue
        reason = f"{branch} has {len(views)} views, fewer than {min_views}"
        rejects += [reject(pid, v.source_path, v.series_name, branch, reason) for v in views]
    return kept, rejects

"""What a raw folder holds, by its own tags: patients, studies, series, reports and their links.

Images live under `raw/mpr/` as the export came: any tree, nested or flat, files with or
without extension (a DICOMDIR is skipped: the walk finds the files it lists). DICOM files are
grouped by their PatientID, StudyInstanceUID and SeriesInstanceUID; PNG and JPEG files, which
carry no tags, follow the folder convention `mpr/<patient>/<series>/<view>`. Volumes:
`volumes/<patient>.nii.gz` with `centrelines/<patient>.json`.

Reports: `reports/<patient>.txt` (MRN and accession read from its header) or RIS exports
`reports/*.csv|tsv|xlsx|parquet`, one row per report, with configurable column names.

Links: a report belongs to the study with its accession number, else to a study of the
patient with its MRN within `date_window_days` of its exam date, else (folder convention) to
the image folder with its file name. A patient's key is its DICOM PatientID, else its
report's MRN, else the folder or file name; one patient in two folders is one patient.
Keys are identifiers: callers pass them only through `Pseudonyms`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial
from pathlib import Path

import pandas as pd
import pydicom

from cass_pipeline.domain.cohort.headers import DICOMDIR_CLASS, is_bitmap_file, read_header, tag
from cass_pipeline.domain.cohort.listing import list_files
from cass_pipeline.domain.cohort.report_sources import (
    IndexReject,
    ReportColumns,
    ReportSource,
    report_sources,
)
from cass_pipeline.domain.workers import worker_pool
from cass_pipeline.layout import RawLayout

#: Why the index sets aside an image file it cannot place (ingestion adds the reader's reason).
NO_PATIENT = "no PatientID in the header and not in a patient folder"
#: Trees with more files than this have their headers read on all cores.
PARALLEL_FILES = 20_000


@dataclass(frozen=True)
class ImageFile:
    """One file under `mpr/`, with what its header (or its folder) says about it."""

    path: Path
    patient: str | None
    study: str
    accession: str | None = None
    study_date: str | None = None
    folder_patient: str | None = None
    series: str = ""
    series_name: str = ""
    frames: int = 1


@dataclass
class Study:
    patient: str
    uid: str
    accession: str | None
    study_date: str | None
    files: list[ImageFile] = field(default_factory=list)


@dataclass
class IndexedPatient:
    """A patient's images (one study), volume and report, under its key."""

    key: str
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    volume: Path | None = None
    centrelines: Path | None = None
    report: ReportSource | None = None
    study_date: str | None = None

    def sources(self) -> list[Path]:
        """Every raw file this patient's outputs come from."""
        found = [*self.files, *(p for p in (self.volume, self.centrelines) if p is not None)]
        return found + ([self.report.path] if self.report is not None else [])


@dataclass
class CohortIndex:
    patients: dict[str, IndexedPatient]
    unlinked_reports: list[ReportSource]
    rejects: list[IndexReject]
    dicomdirs: int = 0
    files: list[ImageFile] = field(default_factory=list)
    reports: list[ReportSource] = field(default_factory=list)


def image_file(path: Path, mpr: Path) -> ImageFile | None:
    """One file under `mpr` with its patient, study and series (None for a DICOMDIR)."""
    parts = path.relative_to(mpr).parts
    folder_patient = parts[0] if len(parts) > 1 else None
    if is_bitmap_file(path):
        return ImageFile(
            path,
            folder_patient,
            study="",
            folder_patient=folder_patient,
            series=path.parent.relative_to(mpr).as_posix(),
            series_name=path.parent.name,
        )
    ds = read_header(path)
    if path.name.upper() == "DICOMDIR" or (
        ds is not None
        and str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS
    ):
        return None
    if ds is None:
        ds = pydicom.Dataset()
    return ImageFile(
        path,
        tag(ds, "PatientID") or folder_patient,
        study=tag(ds, "StudyInstanceUID") or "",
        accession=tag(ds, "AccessionNumber"),
        study_date=tag(ds, "StudyDate"),
        folder_patient=folder_patient,
        series=tag(ds, "SeriesInstanceUID") or path.parent.relative_to(mpr).as_posix(),
        series_name=tag(ds, "SeriesDescription") or path.parent.name,
        frames=int(tag(ds, "NumberOfFrames") or 1),
    )


def folder_of(path: Path, mpr: Path) -> str | None:
    """The patient folder under `mpr` that `path` is (or lies in); None for a loose file."""
    parts = path.relative_to(mpr).parts
    return parts[0] if len(parts) > 1 or path.is_dir() else None


def image_files(
    mpr: Path, workers: int | None = None
) -> tuple[list[ImageFile], int, list[IndexReject]]:
    """Every image file under `mpr` (`image_file`), headers read on `workers` processes when
    the tree holds over PARALLEL_FILES files; DICOMDIRs counted; the files and folders this
    account cannot read, as rejects."""
    if not mpr.is_dir():
        return [], 0, []
    listing = list_files(mpr)
    paths = listing.files
    unreadable = [
        IndexReject(folder_of(path, mpr), path, reason) for path, reason in listing.unreadable
    ]
    workers = workers or os.cpu_count() or 1
    read = partial(image_file, mpr=mpr)
    if workers > 1 and len(paths) > PARALLEL_FILES:
        with worker_pool(workers) as pool:
            found = list(pool.map(read, paths, chunksize=256))
    else:
        found = [read(path) for path in paths]
    files = [f for f in found if f is not None]
    return files, len(found) - len(files), unreadable


def iso_date(value: str | None) -> date | None:
    """A date from DICOM (YYYYMMDD) or the usual written forms, else None."""
    if not value:
        return None
    text = str(value).strip()
    for parse in (
        lambda t: date(int(t[:4]), int(t[4:6]), int(t[6:8])) if t.isdigit() else None,
        lambda t: pd.Timestamp(t).date(),
    ):
        try:
            found = parse(text)
        except (ValueError, TypeError):
            continue
        if found is not None:
            return found
    return None


def with_folder_study(files: list[ImageFile]) -> list[ImageFile]:
    """Bitmaps (no tags) join the DICOM study of their patient folder when it has one."""
    tagged: dict[str, set[tuple]] = defaultdict(set)
    for f in files:
        if f.study and f.folder_patient:
            tagged[f.folder_patient].add((f.patient, f.study, f.accession, f.study_date))
    placed = []
    for f in files:
        studies = tagged.get(f.folder_patient or "", set())
        if not f.study and len(studies) == 1:
            patient, study, accession, study_date = next(iter(studies))
            f = replace(f, patient=patient, study=study, accession=accession, study_date=study_date)
        placed.append(f)
    return placed


def studies_of(files: list[ImageFile]) -> dict[str, list[Study]]:
    """Image files grouped into studies per patient (a folder-convention patient has one)."""
    studies: dict[tuple[str, str], Study] = {}
    for file in files:
        if file.patient is None:
            continue
        key = (file.patient, file.study)
        if key not in studies:
            studies[key] = Study(file.patient, file.study, file.accession, file.study_date)
        studies[key].files.append(file)
    by_patient: dict[str, list[Study]] = defaultdict(list)
    for study in studies.values():
        by_patient[study.patient].append(study)
    return by_patient


def link_report(
    report: ReportSource,
    by_patient: dict[str, list[Study]],
    folders: dict[str, str],
    window_days: int,
) -> Study | None:
    """The study a report belongs to (accession, else MRN and date, else file name)."""
    if report.accession:
        same = [s for studies in by_patient.values() for s in studies]
        same = [s for s in same if s.accession == report.accession]
        if same:  # an accession shared by mistake: the study of the report's own patient
            return next((s for s in same if s.patient == report.mrn), same[0])
    candidates = by_patient.get(report.mrn or "", [])
    if not candidates and report.row is None and report.stem in folders:
        candidates = by_patient.get(folders[report.stem], [])
    if len(candidates) == 1 and (report.exam_date is None or candidates[0].study_date is None):
        return candidates[0]
    exam = iso_date(report.exam_date)
    dated = [(s, iso_date(s.study_date)) for s in candidates]
    if exam is not None:
        near = [(abs((d - exam).days), s) for s, d in dated if d is not None]
        near = [(days, s) for days, s in near if days <= window_days]
        if near:
            return min(near, key=lambda pair: (pair[0], pair[1].uid))[1]
        return None
    return candidates[0] if len(candidates) == 1 else None


def index_cohort(raw: Path, columns: ReportColumns | None = None) -> CohortIndex:
    """Patients, their one study's files, volumes and reports; everything unused, with why."""
    columns = columns or ReportColumns()
    export = RawLayout(raw)
    files, dicomdirs, unreadable = image_files(export.mpr)
    rejects = [IndexReject(None, f.path, NO_PATIENT) for f in files if f.patient is None]
    rejects += unreadable
    files = with_folder_study(files)
    by_patient = studies_of(files)
    folders = {f.folder_patient: f.patient for f in files if f.folder_patient and f.patient}
    reports, report_rejects = report_sources(export.reports, columns)
    rejects += report_rejects
    linked, unlinked, second_reports = link_reports(reports, by_patient, folders, columns)
    rejects += second_reports
    patients, second_studies = choose_studies(by_patient, linked, export.mpr)
    rejects += second_studies
    volumes = volume_patients(export, set(folders) | set(patients))
    still_unlinked, unplaced = place_unlinked(unlinked, volumes, patients, bool(by_patient))
    rejects += unplaced
    return CohortIndex(
        dict(sorted(patients.items())), still_unlinked, rejects, dicomdirs, files, reports
    )


def link_reports(
    reports: list[ReportSource],
    by_patient: dict[str, list[Study]],
    folders: dict[str, str],
    columns: ReportColumns,
) -> tuple[dict[tuple[str, str], ReportSource], list[ReportSource], list[IndexReject]]:
    """Each report on its study (`link_report`): the linked by (patient, study), the
    unlinked, and a second report of a study as a reject."""
    linked: dict[tuple[str, str], ReportSource] = {}
    unlinked, rejects = [], []
    for report in reports:
        study = link_report(report, by_patient, folders, columns.date_window_days)
        if study is None:
            unlinked.append(report)
        elif (study.patient, study.uid) in linked:
            reason = "a second report for the same study"
            rejects.append(IndexReject(study.patient, report.path, reason, "report"))
        else:
            linked[(study.patient, study.uid)] = report
    return linked, unlinked, rejects


def choose_studies(
    by_patient: dict[str, list[Study]],
    linked: dict[tuple[str, str], ReportSource],
    mpr: Path,
) -> tuple[dict[str, IndexedPatient], list[IndexReject]]:
    """One study per patient (the one linked to a report, else the latest) with its report;
    the files of the other studies as rejects."""
    patients: dict[str, IndexedPatient] = {}
    rejects = []
    for patient, studies in by_patient.items():
        with_report = [s for s in studies if (s.patient, s.uid) in linked]
        chosen = (with_report or sorted(studies, key=lambda s: (s.study_date or "", s.uid)))[-1]
        for other in studies:
            if other is not chosen:
                reason = f"second study of the patient ({other.study_date or 'no date'}); used "
                reason += "the one linked to the report" if with_report else "the latest"
                rejects += [IndexReject(patient, f.path, reason) for f in other.files]
        paths = sorted(f.path for f in chosen.files)
        report = linked.get((patient, chosen.uid))
        key = patient
        if not any(f.study for f in chosen.files) and report is not None and report.mrn:
            key = report.mrn  # a bitmap folder: the report names the patient
        folders_of_study = {f.folder_patient for f in chosen.files}
        root = (
            mpr / folders_of_study.pop()
            if len(folders_of_study) == 1 and None not in folders_of_study
            else common_root(paths)
        )  # the patient's folder in a folder layout, so output paths never start with it
        patients[key] = IndexedPatient(
            key, paths, root, report=report, study_date=chosen.study_date
        )
    return patients, rejects


def volume_patients(raw: RawLayout, taken: set[str]) -> dict[str, IndexedPatient]:
    """Patients given as a volume with its centrelines, by file name, where no image folder
    or patient has that name."""
    volumes: dict[str, IndexedPatient] = {}
    for volume in sorted(raw.volumes.glob("*.nii*")) if raw.volumes.is_dir() else []:
        name = volume.name.split(".")[0]
        centreline = raw.centreline_file(name)
        if name not in taken and centreline.is_file():
            volumes[name] = IndexedPatient(name, volume=volume, centrelines=centreline)
    return volumes


def place_unlinked(
    unlinked: list[ReportSource],
    volumes: dict[str, IndexedPatient],
    patients: dict[str, IndexedPatient],
    with_images: bool,
) -> tuple[list[ReportSource], list[IndexReject]]:
    """Reports no study took: a volume patient's by its name; without any images, each its
    own patient (a second report of one as a reject); else left unlinked. The volume
    patients join `patients`, keyed by their report's MRN."""
    still_unlinked, rejects = [], []
    for report in unlinked:
        if report.row is None and report.stem in volumes and volumes[report.stem].report is None:
            volumes[report.stem].report = report  # a volume patient, named like its report
        elif with_images:
            still_unlinked.append(report)
        else:  # reports without images: each names its own patient
            key = report.mrn or report.stem
            entry = patients.setdefault(key, IndexedPatient(key))
            if entry.report is None:
                entry.report = report
            else:
                reason = "a second report for the same patient"
                rejects.append(IndexReject(key, report.path, reason, "report"))
    for name, entry in volumes.items():
        entry.key = entry.report.mrn if entry.report and entry.report.mrn else name
        patients.setdefault(entry.key, entry)
    return still_unlinked, rejects


def common_root(paths: list[Path]) -> Path | None:
    """The deepest folder holding all `paths` (the patient's folder in a folder layout)."""
    if not paths:
        return None
    root = paths[0].parent
    while not all(p.is_relative_to(root) for p in paths):
        root = root.parent
    return root


def folder_patient_key(folder: Path) -> str:
    """The key of one patient's export folder: the DICOM PatientID its files agree on, else
    the folder name (PNG and JPEG exports, or files of several patients)."""
    ids = set()
    for path in list_files(folder).files:
        if not is_bitmap_file(path) and (ds := read_header(path)) is not None:
            ids.add(tag(ds, "PatientID"))
    ids.discard(None)
    return ids.pop() if len(ids) == 1 else folder.name

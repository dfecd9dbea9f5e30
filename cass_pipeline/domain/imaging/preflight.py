"""What ingestion would make of a raw folder, found without writing anything (`cass inspect`).

It runs the ingestion's own rules: the cohort index (patients, studies, links), the reader
and frame check on every image file, the alias tables for series names and the minimum
number of views per branch. Paths are relative to the raw folder and may name patients:
the summary is for whoever holds the raw data.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

from cass_pipeline.domain.cohort.index import CohortIndex
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.readers import file_problem, set_aside_reason
from cass_pipeline.domain.imaging.series_names import closest_branch


def preflight(raw: Path, index: CohortIndex, config: IngestConfig) -> dict:
    """Patients, studies, series, branches, views, unknown series names, reports and
    unusable files of an indexed raw folder, as ingestion would see them."""

    def relative(path: Path) -> str:
        return path.relative_to(raw).as_posix()

    by_path = {f.path: f for f in index.files}
    unusable, unknown, patients = [], Counter(), []
    branch_patients: Counter = Counter()
    views_per_branch: list[int] = []
    for patient in index.patients.values():
        branches: dict[str, int] = defaultdict(int)
        for path in patient.files:
            problem = file_problem(path)
            if problem:
                unusable.append({"path": relative(path), "reason": problem})
                continue
            file = by_path[path]
            branch = config.branch_of_series(file.series_name, file.path.parent.name)
            if branch is None:
                unknown[file.series_name] += 1
            else:
                branches[branch] += file.frames
        usable = {b: n for b, n in branches.items() if n >= config.min_views}
        branch_patients.update(usable.keys())
        views_per_branch += list(usable.values())
        patients.append(
            {
                "folder": relative(patient.root) if patient.root else None,
                "volume": relative(patient.volume) if patient.volume else None,
                "branches": dict(sorted(branches.items())),
                "too_few_views": sorted(set(branches) - set(usable)),
                "report": patient.report.origin if patient.report else None,
                "ingestible": bool(usable) or patient.volume is not None,
            }
        )
    set_aside = [
        {"path": relative(r.path), "reason": set_aside_reason(r)}
        for r in index.rejects
        if r.kind == "image"
    ]
    report_problems = [
        {"path": relative(r.path), "reason": r.reason} for r in index.rejects if r.kind == "report"
    ]
    linked = sum(p.report is not None for p in index.patients.values())
    return {
        "raw": str(raw),
        "patients": len(patients),
        "patients_ingestible": sum(p["ingestible"] for p in patients),
        "image_files": len(index.files),
        "dicomdirs_skipped": index.dicomdirs,
        "studies_set_aside": len({r["path"].rsplit("/", 1)[0] for r in set_aside}),
        "branches": dict(sorted(branch_patients.items())),
        "views_per_branch": (
            {
                "min": min(views_per_branch),
                "median": statistics.median(views_per_branch),
                "max": max(views_per_branch),
            }
            if views_per_branch
            else None
        ),
        "unknown_series": [
            {"name": name, "files": count, "closest_branch": closest_branch(name)}
            for name, count in unknown.most_common()
        ],
        "reports": {
            "found": len(index.reports),
            "linked": linked,
            "unlinked": [r.origin for r in index.unlinked_reports],
            "problems": report_problems,
            "patients_without_report": sum(
                p.report is None for p in index.patients.values() if p.files
            ),
        },
        "unusable_files": unusable,
        "set_aside_files": set_aside,
        "patient_list": patients,
    }


def summary_lines(result: dict) -> list[str]:
    """The preflight as lines for a terminal."""
    reports = result["reports"]
    lines = [
        f"raw folder: {result['raw']}",
        f"patients: {result['patients']} ({result['patients_ingestible']} ingestible), "
        f"{result['image_files']} image files"
        + (
            f", {result['dicomdirs_skipped']} DICOMDIR skipped"
            if result["dicomdirs_skipped"]
            else ""
        ),
        "branches (patients with enough views): "
        + (", ".join(f"{b} {n}" for b, n in result["branches"].items()) or "none"),
    ]
    if result["views_per_branch"]:
        v = result["views_per_branch"]
        lines.append(f"views per branch: min {v['min']}, median {v['median']}, max {v['max']}")
    lines.append(
        f"reports: {reports['found']} found, {reports['linked']} linked, "
        f"{len(reports['unlinked'])} unlinked, {reports['patients_without_report']} "
        "patients without a report"
    )
    for item in result["unknown_series"]:
        hint = f" (closest: {item['closest_branch']})" if item["closest_branch"] else ""
        lines.append(f"unknown series name {item['name']!r}: {item['files']} files{hint}")
    for report in reports["unlinked"]:
        lines.append(f"unlinked report: {report}")
    for group, title in (
        (reports["problems"], "report problem"),
        (result["unusable_files"], "unusable file"),
        (result["set_aside_files"], "set aside"),
    ):
        lines += [f"{title}: {item['path']}: {item['reason']}" for item in group]
    for patient in result["patient_list"]:
        if patient["too_few_views"]:
            where = patient["folder"] or patient["volume"]
            lines.append(f"too few views in {where}: {', '.join(patient['too_few_views'])}")
    return lines


def patient_locations(patients: dict, wanted, image_rejects, report_rejects) -> list[str]:
    """For the key holder: each pseudonym's source folder, report and rejected files.

    `patients` maps pseudonym -> `raw_layout.RawPatient`; the rejects are the processed
    rejects tables, or None before ingestion.
    """
    lines = []
    for pseudonym in wanted:
        patient = patients[pseudonym]
        key = "public (generated patient)" if patient.public_key else "secret"
        lines += [
            f"{pseudonym}  {patient.key}  [{key} key]",
            f"  images: {patient.images or '-'}",
            f"  report: {patient.report or '-'}",
        ]
        if image_rejects is not None and patient.images is not None:
            folder = patient.images if patient.images.is_dir() else patient.images.parent
            for row in image_rejects[image_rejects.patient_id == pseudonym].itertuples():
                lines.append(f"  rejected image: {folder / row.source_path}: {row.reason}")
        if report_rejects is not None:
            for row in report_rejects[report_rejects.patient_id == pseudonym].itertuples():
                lines.append(f"  rejected report: {patient.report}: {row.reason}")
    return lines

"""Generate a cohort patient by patient, in parallel, streaming: files plus ground truth.

Layout under the output folder:
    mpr/<case>/<series>/<view>.dcm|png   workstation-style export (identifiers in headers and
                                          burned into pixels, as in real exports)
    reports/<case>.txt                    free-text report with an identifying header
    volumes/<case>.nii.gz, centrelines/<case>.json   (optional) the source CT and centrelines
    ground_truth/{patients,branches,views}.parquet   keyed by case id, no identifiers
    ground_truth/overlays/<case>.png   every view's overlay mask (`overlay_masks_path`)
    contact_sheet.png, cohort.json        one branch's views; settings and summary figures
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH, STENOSIS_CLASSES, cad_rads_category
from cass_pipeline.domain.imaging.cpr import Volume, curved_mpr_views
from cass_pipeline.domain.imaging.volume_io import write_centrelines, write_nifti
from cass_pipeline.domain.storage import (
    exclusive_writer,
    parquet_stream,
    write_bytes_atomic,
    write_text_atomic,
)
from cass_pipeline.domain.synthetic.config import SynthConfig
from cass_pipeline.domain.synthetic.coronary_tree import (
    Branch,
    PatientAnatomy,
    apparent_stenosis,
    build_anatomy,
)
from cass_pipeline.domain.synthetic.export import (
    GREY_OVERLAY_LEVEL,
    SERIES_SUFFIXES,
    TEXT_LEVEL,
    Identity,
    contact_sheet,
    ct_stored,
    in_colour,
    series_description,
    series_folder,
    text_overlay,
    window_to_uint8,
    write_dicom,
    write_png,
)
from cass_pipeline.domain.synthetic.phantom import render_volume
from cass_pipeline.domain.synthetic.provenance import (
    MARKER_DIR,
    ForeignFilesError,
    Provenance,
    digests,
    marked_cases,
    marker_path,
    patient_files,
    provenance,
    read_marker,
)
from cass_pipeline.domain.synthetic.reports import make_identity, write_report
from cass_pipeline.domain.workers import worker_pool
from cass_pipeline.layout import MPR, OVERLAYS, RawLayout, ground_truth_table

PATIENT_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("dominance", pa.string()),
        ("cad_rads", pa.string()),
        ("patient_class", pa.string()),
        ("agatston", pa.float64()),
        ("report_style", pa.string()),
        ("n_branches", pa.int32()),
        ("n_exported_branches", pa.int32()),
    ]
)
BRANCH_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("branch", pa.string()),
        ("artery", pa.string()),
        ("exported", pa.bool_()),
        ("series_description", pa.string()),
        ("length_mm", pa.float64()),
        ("stenosis_pct", pa.float64()),
        ("stenosis_class", pa.string()),
        ("label", pa.int8()),
        ("plaque_type", pa.string()),
        ("lesion_position", pa.float64()),
        ("lesion_length_mm", pa.float64()),
        ("lesion_angle_deg", pa.float64()),
        ("eccentricity", pa.float64()),
        ("high_risk_plaque", pa.bool_()),
        ("stent", pa.bool_()),
        ("myocardial_bridge", pa.bool_()),
        ("reported_non_diagnostic", pa.bool_()),
    ]
)
VIEW_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("angle_deg", pa.float64()),
        ("apparent_stenosis_pct", pa.float64()),
        ("cut_through_lesion", pa.bool_()),
        ("file", pa.string()),
        ("frame", pa.int32()),
        ("overlay_pixels", pa.int32()),
        ("overlay_mask", pa.string()),
        ("overlay_index", pa.int32()),
    ]
)
GENERATOR = "cass synth"


def case_id(index: int) -> str:
    return f"CASE-{index + 1:04d}"


def patient_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent, order-free random streams per patient (anatomy, identity, text)."""
    return np.random.default_rng([seed, index, stream])


def generate_patient(config: SynthConfig, out_dir: Path, index: int) -> dict:
    """Write one patient's files (skipped when exactly its files, with the same settings, are
    already there); refuses to overwrite files the generator did not write."""
    case = case_id(index)
    state = provenance(out_dir, case)
    if state is Provenance.FOREIGN:
        raise ForeignFilesError(foreign_message(out_dir, [case]))
    previous = read_marker(out_dir, case)
    if state is Provenance.GENERATED and previous["fingerprint"] == config.fingerprint():
        return previous
    cv2.setNumThreads(1)
    rng = patient_rng(config.seed, index, 0)
    identity = make_identity(patient_rng(config.seed, index, 1))
    text_rng = patient_rng(config.seed, index, 2)
    anatomy = build_anatomy(config, rng)
    volume = render_volume(anatomy, config, rng)

    staging = out_dir / MARKER_DIR / "staging" / case
    shutil.rmtree(staging, ignore_errors=True)
    suffix = str(text_rng.choice(SERIES_SUFFIXES))
    lowercase = bool(text_rng.random() < 0.15)
    branch_rows, view_rows, sheets, overlays = [], [], {}, []
    series_number = 0
    for name, branch in anatomy.branches.items():
        description = series_description(name, suffix, lowercase) if branch.exported else None
        branch_rows.append(branch_truth_row(case, name, branch, description))
        if branch.exported:
            series_number += 1
            export = BranchExport(case, name, description, series_number)
            sheets[name], rows, masks = export_branch(
                config, volume, branch, identity, export, staging
            )
            view_rows += [row | {"overlay_index": len(overlays) + k} for k, row in enumerate(rows)]
            overlays += masks

    if overlays:
        write_png(staging / overlay_masks_path(case), np.concatenate(overlays) * np.uint8(255))
    styles = config.site.report_styles
    style = styles[index % len(styles)]
    written_raw = RawLayout(staging)
    report = write_report(anatomy, identity, style, text_rng)
    write_text_atomic(written_raw.report_file(case), report.text)
    for row in branch_rows:
        row["reported_non_diagnostic"] = row["branch"] in report.non_diagnostic
    if config.write_volumes:
        write_nifti(volume, written_raw.volume_file(case))
        write_centrelines(
            {n: b.frames.points for n, b in anatomy.branches.items()},
            written_raw.centreline_file(case),
        )
    write_sheet(out_dir, case, anatomy, sheets, view_rows)
    truth = {
        "patient": patient_truth_row(case, anatomy, style, series_number),
        "branches": branch_rows,
        "views": view_rows,
    }
    return publish_record(config, out_dir, case, staging, truth)


def branch_truth_row(case: str, name: str, branch: Branch, description: str | None) -> dict:
    """The ground truth of one branch: its stenosis, lesion, devices and series name."""
    lesion = branch.lesion
    return {
        "case_id": case,
        "branch": name,
        "artery": ARTERY_OF_BRANCH[name],
        "exported": branch.exported,
        "series_description": description,
        "length_mm": round(branch.length_mm, 2),
        "stenosis_pct": branch.stenosis_pct,
        "stenosis_class": branch.stenosis_class,
        "label": STENOSIS_CLASSES.index(branch.stenosis_class),
        "plaque_type": lesion.plaque if lesion else None,
        "lesion_position": round(lesion.position, 4) if lesion else None,
        "lesion_length_mm": round(lesion.length_mm, 2) if lesion else None,
        "lesion_angle_deg": round(lesion.angle_deg, 2) if lesion else None,
        "eccentricity": round(lesion.eccentricity, 4) if lesion else None,
        "high_risk_plaque": bool(lesion and lesion.high_risk),
        "stent": branch.stent is not None,
        "myocardial_bridge": branch.bridge is not None,
    }


@dataclass(frozen=True)
class BranchExport:
    """Which series one exported branch becomes."""

    case: str
    branch: str
    description: str
    series_number: int


def export_branch(
    config: SynthConfig,
    volume: Volume,
    branch: Branch,
    identity: Identity,
    export: BranchExport,
    staging: Path,
) -> tuple[np.ndarray, list[dict], list[np.ndarray]]:
    """One branch's curved MPR views, annotated as a workstation burns them in, written
    under `staging` as DICOM or PNG; the clean views (for the contact sheet), the ground
    truth of every view and its overlay mask."""
    lesion = branch.lesion
    cpr = curved_mpr_views(
        volume,
        branch.frames.points,
        config.n_views,
        config.view_width_mm,
        config.cpr_pixel_mm,
        (config.image_size, config.image_size),
    )
    apparent = apparent_stenosis(lesion, cpr.angles_deg)
    mm_per_col = config.view_width_mm / config.image_size
    mm_per_row = branch.length_mm / config.image_size
    folder = RawLayout(staging).mpr_folder(export.case) / series_folder(export.description)
    folder.mkdir(parents=True, exist_ok=True)
    style = config.export_style
    clean_views = window_to_uint8(cpr.images, saturating=style == "saturated")
    suffix = "dcm" if config.image_format == "dicom" else "png"
    written, overlays, rows = [], [], []
    for k, (pixels, angle) in enumerate(zip(clean_views, cpr.angles_deg, strict=True)):
        overlay = text_overlay(
            pixels.shape,
            [identity.mrn, export.description.replace(" *", ""), f"{angle:.0f} deg"],
            identity.exam_date,
            mm_per_col,
        )
        overlays.append(overlay)
        if style == "ct_16bit":
            annotated = ct_stored(cpr.images[k], overlay)
        elif style == "colour_overlay":
            annotated = in_colour(pixels, overlay)
        elif style == "no_overlay":  # the clean view itself: what a cleanup should give
            annotated = pixels
        elif style == "grey_overlay":
            annotated = np.where(overlay, np.uint8(GREY_OVERLAY_LEVEL), pixels)
        else:
            annotated = np.where(overlay, np.uint8(TEXT_LEVEL), pixels)
        written.append(annotated)
        target = folder / ("views.dcm" if style == "multiframe" else f"{k:03d}.{suffix}")
        rows.append(
            {
                "case_id": export.case,
                "branch": export.branch,
                "view_index": k,
                "angle_deg": float(angle),
                "apparent_stenosis_pct": float(apparent[k]),
                "cut_through_lesion": bool(
                    lesion is not None and apparent[k] >= 0.5 * lesion.stenosis_pct
                ),
                "file": target.relative_to(staging).as_posix(),
                "frame": k if style == "multiframe" else 0,
                "overlay_pixels": int(overlay.sum()),
                "overlay_mask": overlay_masks_path(export.case),
            }
        )
    if config.image_format == "png":
        for row, image in zip(rows, written, strict=True):
            write_png(staging / row["file"], image)
        return clean_views, rows, overlays
    # (file, frames, instance number, angle): one instance per view, or one of them all
    instances = (
        [(folder / "views.dcm", np.stack(written), 1, 0.0)]
        if style == "multiframe"
        else [
            (staging / row["file"], image[None], k, float(angle))
            for k, (row, image, angle) in enumerate(zip(rows, written, cpr.angles_deg, strict=True))
        ]
    )
    for path, frames, instance, angle in instances:
        write_dicom(
            path,
            frames,
            identity,
            export.description,
            export.series_number,
            instance,
            angle,
            (mm_per_row, mm_per_col),
            study_key=f"{config.seed}/{export.case}",
            style=style,
        )
    return clean_views, rows, overlays


def overlay_masks_path(case: str) -> str:
    """Where a patient's overlay masks lie: one PNG, every exported view's mask stacked top to
    bottom (a view's square is its `overlay_index`), 255 where the overlay is."""
    return f"{OVERLAYS}/{case}.png"


def patient_truth_row(
    case: str, anatomy: PatientAnatomy, style: str, exported_branches: int
) -> dict:
    """The ground truth of one patient: dominance, CAD-RADS, class, calcium, report style."""
    maxima = {n: b.stenosis_pct for n, b in anatomy.branches.items()}
    worst = max(STENOSIS_CLASSES.index(b.stenosis_class) for b in anatomy.branches.values())
    return {
        "case_id": case,
        "dominance": anatomy.dominance,
        "cad_rads": cad_rads_category(maxima),
        "patient_class": STENOSIS_CLASSES[worst],
        "agatston": anatomy.agatston,
        "report_style": style,
        "n_branches": len(anatomy.branches),
        "n_exported_branches": exported_branches,
    }


def publish_record(
    config: SynthConfig, out_dir: Path, case: str, staging: Path, truth: dict
) -> dict:
    """Swap a patient's staging tree into place under its marker: the marker names the
    files first (incomplete), then is marked complete once they are in place."""
    written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    record = {
        "fingerprint": config.fingerprint(),
        "complete": False,
        "files": digests(staging, written),
        "replaces": digests(out_dir, patient_files(out_dir, case)),
        **truth,
    }
    write_text_atomic(marker_path(out_dir, case), json.dumps(record))
    publish_patient(staging, out_dir, case, set(written), record["replaces"])
    record["complete"] = True
    del record["replaces"]
    write_text_atomic(marker_path(out_dir, case), json.dumps(record))
    return record


def publish_patient(
    staging: Path, out_dir: Path, case: str, written: set[str], replaced: dict[str, str]
) -> None:
    """Move a patient's fully written staging tree into place; files of its previous version
    that the new one does not write are removed."""
    publish_folder(RawLayout(staging).mpr_folder(case), RawLayout(out_dir).mpr_folder(case))
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for rel in replaced.keys() - written:
        if not rel.startswith(f"{MPR}/{case}/"):
            (out_dir / rel).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, final: Path) -> None:
    """Swap a fully written staging folder into place (old copy removed after the swap)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    trash = staging.with_name(staging.name + ".old")
    shutil.rmtree(trash, ignore_errors=True)
    if final.exists():
        os.replace(final, trash)
    os.replace(staging, final)
    shutil.rmtree(trash, ignore_errors=True)


def foreign_message(out_dir: Path, cases: list[str]) -> str:
    shown = ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")
    return (
        f"{out_dir} holds files of {shown} that the synthetic generator did not write; "
        "it never overwrites or deletes them: move them away, or generate into an empty "
        "folder (CASS_RAW_DIR)"
    )


def write_sheet(
    out_dir: Path, case: str, anatomy: PatientAnatomy, sheets: dict, views: list
) -> None:
    """The contact sheet of the patient's most stenotic exported branch (hidden, per patient)."""
    if not sheets:
        return
    name = max(sheets, key=lambda n: anatomy.branches[n].stenosis_pct)
    branch = anatomy.branches[name]
    captions = [
        f"{v['angle_deg']:.0f}{'*' if v['cut_through_lesion'] else ''}"
        for v in views
        if v["branch"] == name
    ]
    title = f"{case} {name}: {branch.stenosis_pct:.0f}% ({branch.stenosis_class})"
    sheet = contact_sheet(sheets[name], title + "; * = cut through lesion", captions)
    write_png(out_dir / MARKER_DIR / f"{case}.png", sheet)


def iter_patients(config: SynthConfig, out_dir: Path, workers: int) -> Iterator[dict]:
    """Patient records in order, generated on `workers` processes."""
    indices = range(config.n_patients)
    if workers <= 1:
        yield from (generate_patient(config, out_dir, i) for i in indices)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(partial(generate_patient, config, out_dir), indices)


def generate_cohort(
    config: SynthConfig,
    out_dir: Path,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict:
    """Generate (or complete) a cohort and write its ground truth tables and summary; one
    writer of `out_dir` at a time (`notify` hears that one waits)."""
    out_dir = Path(out_dir).resolve()
    with exclusive_writer(out_dir, notify=notify or (lambda _: None)):
        return write_cohort(config, out_dir, workers or os.cpu_count() or 1, progress)


def write_cohort(
    config: SynthConfig,
    out_dir: Path,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> dict:
    foreign = [
        case_id(i)
        for i in range(config.n_patients)
        if provenance(out_dir, case_id(i)) is Provenance.FOREIGN
    ]
    if foreign:
        raise ForeignFilesError(foreign_message(out_dir, foreign))
    counts = {
        "branches": np.zeros(3, int),
        "exported": np.zeros(3, int),
        "views": 0,
        "lesion_views": 0,
        "missed_views": 0,
        "cad_rads": {},
        "patients": 0,
    }
    sheet_case = None
    with (
        parquet_stream(ground_truth_table(out_dir, "patients"), PATIENT_SCHEMA) as patients,
        parquet_stream(ground_truth_table(out_dir, "branches"), BRANCH_SCHEMA) as branches,
        parquet_stream(ground_truth_table(out_dir, "views"), VIEW_SCHEMA) as views,
    ):
        for done, record in enumerate(iter_patients(config, out_dir, workers), start=1):
            patients.write_table(pa.Table.from_pylist([record["patient"]], PATIENT_SCHEMA))
            branches.write_table(pa.Table.from_pylist(record["branches"], BRANCH_SCHEMA))
            views.write_table(pa.Table.from_pylist(record["views"], VIEW_SCHEMA))
            update_counts(counts, record)
            if sheet_case is None and any(
                b["exported"] and b["label"] == 2 for b in record["branches"]
            ):
                sheet_case = record["patient"]["case_id"]
            if progress:
                progress(done, config.n_patients)
    prune_extra_patients(out_dir, config.n_patients)
    sheet_case = sheet_case or case_id(0)
    sheet = out_dir / MARKER_DIR / f"{sheet_case}.png"
    if sheet.is_file():
        write_bytes_atomic(out_dir / "contact_sheet.png", sheet.read_bytes())
    summary = summarise(config, counts, sheet_case)
    write_text_atomic(out_dir / "cohort.json", json.dumps(summary, indent=2))
    return summary


def is_synthetic_cohort(folder: Path) -> bool:
    """Whether the generator wrote (or began writing) a cohort in `folder`."""
    summary = Path(folder) / "cohort.json"
    if not summary.is_file():
        return (Path(folder) / MARKER_DIR).is_dir()
    try:
        return json.loads(summary.read_text()).get("generator") == GENERATOR
    except (json.JSONDecodeError, OSError):
        return False


def prune_extra_patients(out_dir: Path, n_patients: int) -> None:
    """Remove generated patients left over from an earlier, larger run of the generator;
    a patient whose folder holds anything the generator did not write is left alone."""
    keep = {case_id(i) for i in range(n_patients)}
    for case in marked_cases(out_dir):
        if case in keep or provenance(out_dir, case) is Provenance.FOREIGN:
            continue
        for rel in patient_files(out_dir, case):
            (out_dir / rel).unlink()
        shutil.rmtree(RawLayout(out_dir).mpr_folder(case), ignore_errors=True)
        for path in (out_dir / MARKER_DIR).glob(f"{case}.*"):
            path.unlink()


def update_counts(counts: dict, record: dict) -> None:
    counts["patients"] += 1
    category = record["patient"]["cad_rads"]
    counts["cad_rads"][category] = counts["cad_rads"].get(category, 0) + 1
    for row in record["branches"]:
        counts["branches"][row["label"]] += 1
        if row["exported"]:
            counts["exported"][row["label"]] += 1
    lesion_branches = {r["branch"] for r in record["branches"] if r["label"] > 0}
    for row in record["views"]:
        counts["views"] += 1
        if row["branch"] in lesion_branches:
            counts["lesion_views"] += 1
            counts["missed_views"] += not row["cut_through_lesion"]


def summarise(config: SynthConfig, counts: dict, sheet_case: str) -> dict:
    """Settings and figures of a generated cohort (class balance, weak-label rate)."""

    def shares(array):
        total = max(1, int(array.sum()))
        return {c: round(int(n) / total, 4) for c, n in zip(STENOSIS_CLASSES, array, strict=True)}

    return {
        "generator": GENERATOR,
        "config": asdict(config),
        "fingerprint": config.fingerprint(),
        "patients": counts["patients"],
        "branches": int(counts["branches"].sum()),
        "exported_branches": int(counts["exported"].sum()),
        "images": counts["views"],
        "branch_class_share": shares(counts["branches"]),
        "exported_branch_class_share": shares(counts["exported"]),
        "cad_rads_counts": dict(sorted(counts["cad_rads"].items())),
        # Views of stenotic branches whose cut misses the lesion (the paper's Figure 6).
        "weak_label_rate": round(counts["missed_views"] / max(1, counts["lesion_views"]), 4),
        "contact_sheet_case": sheet_case,
    }

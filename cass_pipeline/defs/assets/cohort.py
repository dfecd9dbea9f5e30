"""The raw cohort: a real export left as it is, or the synthetic cohort written into raw/."""

from pathlib import Path
from typing import get_args

import dagster as dg
import pandas as pd
from pydantic import Field

from cass_pipeline.defs.presentation import parquet_metadata, png_markdown
from cass_pipeline.defs.resources import CassPaths, RawFormat
from cass_pipeline.domain.cohort.raw_layout import EXPECTED_IMAGES, EXPECTED_REPORTS
from cass_pipeline.domain.synthetic.cohort import generate_cohort, is_synthetic_cohort
from cass_pipeline.domain.synthetic.config import (
    DEFAULT_PRESET,
    PRESETS,
    Difficulty,
    ExportStyle,
    ImageFormat,
    preset,
)
from cass_pipeline.domain.synthetic.provenance import missing_or_changed, public_keys
from cass_pipeline.layout import GROUND_TRUTH_TABLES, RawLayout, ground_truth_table


def preset_choice(choices) -> str:
    """Help for an optional override of a preset (Dagster takes no optional Literal)."""
    return " | ".join(get_args(choices)) + " (default: the preset's)"


class CohortConfig(dg.Config):
    """Synthetic cohort settings, used only when the raw folder holds no real export."""

    preset: str = Field(default=DEFAULT_PRESET, description=" | ".join(sorted(PRESETS)))
    seed: int | None = Field(default=None, description="default: the preset's")
    n_patients: int | None = Field(default=None, description="default: the preset's")
    n_views: int | None = Field(default=None, description="views per branch; default the preset's")
    image_size: int | None = Field(default=None, description="px of a view; default the preset's")
    difficulty: str | None = Field(default=None, description=preset_choice(Difficulty))
    image_format: str | None = Field(default=None, description=preset_choice(ImageFormat))
    export_style: str | None = Field(default=None, description=preset_choice(ExportStyle))
    workers: int | None = Field(default=None, description="processes; default all cores")


def holds_real_export(raw: Path) -> bool:
    """A non-empty raw folder that this project's generator did not write."""
    return raw.is_dir() and any(raw.iterdir()) and not is_synthetic_cohort(raw)


def refuse_empty_folder(raw: Path) -> None:
    """An existing empty raw folder is a mistake (a mount that failed), not a request for
    the synthetic cohort."""
    if raw.is_dir() and not any(raw.iterdir()):
        raise dg.Failure(
            f"The raw folder {raw} is empty. Put an export there ({EXPECTED_IMAGES}; "
            f"{EXPECTED_REPORTS}), or remove the folder to have the synthetic demo cohort "
            "written into it."
        )


def real_export_metadata(raw: Path) -> dict:
    export = RawLayout(raw)
    return {
        "source": "real export",
        "path": dg.MetadataValue.path(str(raw)),
        "patients": len(list(export.mpr.glob("*"))) if export.mpr.is_dir() else 0,
        "reports": len(list(export.reports.glob("*.txt"))),
    }


def synthetic_metadata(raw: Path, summary: dict, others: int) -> dict:
    """What the generator wrote, its ground-truth tables and contact sheet."""
    metadata = {
        "source": "synthetic" if not others else "synthetic and other patients (mixed)",
        "patients_not_generated": others,
        "path": dg.MetadataValue.path(str(raw)),
        "patients": summary["patients"],
        "exported_branches": summary["exported_branches"],
        "images": summary["images"],
        "weak_label_rate": summary["weak_label_rate"],
        "branch_class_share": dg.MetadataValue.json(summary["exported_branch_class_share"]),
        "cad_rads_counts": dg.MetadataValue.json(summary["cad_rads_counts"]),
        "config": dg.MetadataValue.json(summary["config"]),
    }
    for table in GROUND_TRUTH_TABLES:
        metadata |= parquet_metadata(ground_truth_table(raw, table), f"{table}_")
    sheet = raw / "contact_sheet.png"
    if sheet.is_file():
        metadata["contact_sheet"] = png_markdown(sheet.read_bytes(), "contact sheet")
    return metadata


@dg.asset(group_name="cohort", kinds={"dicom", "parquet"}, pool="raw_folder")
def raw_cohort(
    context: dg.AssetExecutionContext,
    config: CohortConfig,
    paths: CassPaths,
    raw_format: RawFormat,
) -> dg.MaterializeResult:
    """MPR series and reports under raw/; the synthetic demo cohort when the folder does not
    exist yet (or holds an earlier synthetic cohort). An existing empty folder fails."""
    raw = paths.raw
    refuse_empty_folder(raw)
    if holds_real_export(raw):
        context.log.info(f"Real export found in {raw}; synthetic generation skipped.")
        return dg.MaterializeResult(metadata=real_export_metadata(raw))
    settings = preset(
        config.preset,
        seed=config.seed,
        n_patients=config.n_patients,
        n_views=config.n_views,
        image_size=config.image_size,
        difficulty=config.difficulty,
        image_format=config.image_format,
        export_style=config.export_style,
    )

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            context.log.info(f"synthetic cohort: {done}/{total} patients")

    summary = generate_cohort(
        settings, raw, workers=config.workers, progress=progress, notify=context.log.warning
    )
    index = raw_format.index(raw)  # the same links the report and image assets make
    others = len(index.patients) - len(public_keys(raw, index))
    if others:
        context.log.warning(
            f"{raw} mixes {summary['patients']} generated patients with {others} other "
            "patients: those are pseudonymised with the secret key, never the public one, "
            "and the generator leaves their files untouched."
        )
    return dg.MaterializeResult(metadata=synthetic_metadata(raw, summary, others))


@dg.asset_check(asset=raw_cohort, blocking=True)
def raw_cohort_files_complete(paths: CassPaths) -> dg.AssetCheckResult:
    """Every file the generator wrote for the synthetic ground truth's patients (views,
    reports, volumes) is on disk with its content (skipped for real exports)."""
    patients_path = paths.layout.ground_truth("patients")
    if not is_synthetic_cohort(paths.raw) or not patients_path.is_file():
        return dg.AssetCheckResult(passed=True, metadata={"checked": "not a synthetic cohort"})
    cases = pd.read_parquet(patients_path, columns=["case_id"])["case_id"].tolist()
    damaged = {case: damage for case in cases if (damage := missing_or_changed(paths.raw, case))}
    files = [rel for damage in damaged.values() for rel in damage]
    return dg.AssetCheckResult(
        passed=not damaged,
        description=(
            f"{len(files)} files of {len(damaged)} generated patients are missing or changed; "
            "materialise raw_cohort again to regenerate them"
            if damaged
            else None
        ),
        metadata={
            "patients": len(cases),
            "damaged_patients": len(damaged),
            "missing_or_changed_files": len(files),
            "first_files": dg.MetadataValue.json(files[:10]),
        },
    )

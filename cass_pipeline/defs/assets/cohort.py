"""The raw cohort: a real export left as it is, or the synthetic cohort written into raw/."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from cass_pipeline.defs.presentation import parquet_metadata, png_markdown
from cass_pipeline.defs.resources import CassPaths
from cass_pipeline.domain.synthetic.cohort import generate_cohort, is_synthetic_cohort
from cass_pipeline.domain.synthetic.config import preset


class CohortConfig(dg.Config):
    """Synthetic cohort settings, used only when the raw folder holds no real export."""

    preset: str = Field(default="demo", description="demo, paper or tiny")
    seed: int = 7
    n_patients: int | None = None
    difficulty: str | None = Field(default=None, description="easy, standard or hard")
    image_format: str | None = Field(default=None, description="dicom or png")
    workers: int | None = Field(default=None, description="processes; default all cores")


def holds_real_export(raw: Path) -> bool:
    """A non-empty raw folder that this project's generator did not write."""
    return raw.is_dir() and any(raw.iterdir()) and not is_synthetic_cohort(raw)


@dg.asset(group_name="cohort", kinds={"dicom", "parquet"})
def raw_cohort(
    context: dg.AssetExecutionContext, config: CohortConfig, paths: CassPaths
) -> dg.MaterializeResult:
    """MPR series and reports under raw/; the synthetic demo cohort when no real data is there."""
    raw = paths.raw
    if holds_real_export(raw):
        context.log.info(f"Real export found in {raw}; synthetic generation skipped.")
        return dg.MaterializeResult(
            metadata={
                "source": "real export",
                "path": dg.MetadataValue.path(str(raw)),
                "patients": len(list((raw / "mpr").glob("*"))) if (raw / "mpr").is_dir() else 0,
                "reports": len(list((raw / "reports").glob("*.txt"))),
            }
        )

    settings = preset(
        config.preset,
        seed=config.seed,
        n_patients=config.n_patients,
        difficulty=config.difficulty,
        image_format=config.image_format,
    )

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            context.log.info(f"synthetic cohort: {done}/{total} patients")

    summary = generate_cohort(settings, raw, workers=config.workers, progress=progress)
    metadata = {
        "source": "synthetic",
        "path": dg.MetadataValue.path(str(raw)),
        "patients": summary["patients"],
        "exported_branches": summary["exported_branches"],
        "images": summary["images"],
        "weak_label_rate": summary["weak_label_rate"],
        "branch_class_share": dg.MetadataValue.json(summary["exported_branch_class_share"]),
        "cad_rads_counts": dg.MetadataValue.json(summary["cad_rads_counts"]),
        "config": dg.MetadataValue.json(summary["config"]),
    }
    for table in ("patients", "branches", "views"):
        metadata |= parquet_metadata(raw / "ground_truth" / f"{table}.parquet", f"{table}_")
    sheet = raw / "contact_sheet.png"
    if sheet.is_file():
        metadata["contact_sheet"] = png_markdown(sheet.read_bytes(), "contact sheet")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=raw_cohort, blocking=True)
def raw_cohort_files_complete(paths: CassPaths) -> dg.AssetCheckResult:
    """Every view in the synthetic ground truth exists on disk (skipped for real exports)."""
    views_path = paths.raw / "ground_truth" / "views.parquet"
    if not is_synthetic_cohort(paths.raw) or not views_path.is_file():
        return dg.AssetCheckResult(passed=True, metadata={"checked": "not a synthetic cohort"})
    files = pd.read_parquet(views_path, columns=["file"])["file"]
    missing = [f for f in files if not (paths.raw / f).is_file()]
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "views": len(files),
            "missing": len(missing),
            "first_missing": dg.MetadataValue.json(missing[:10]),
        },
    )

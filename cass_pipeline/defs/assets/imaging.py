"""Image stage: cleaned MPR views in a per-patient store, their manifest, rejects, examples."""

from concurrent.futures import Executor
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from cass_pipeline.defs.assets.cohort import raw_cohort
from cass_pipeline.defs.executors import cluster_pool
from cass_pipeline.defs.presentation import (
    parquet_metadata,
    patient_count_check,
    patients_in,
    png_markdown,
    previous_patients,
)
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.cohort_index import CohortIndex
from cass_pipeline.domain.imaging.cleanup import CleanupConfig, clean_image
from cass_pipeline.domain.imaging.ingest import (
    SETTINGS_FILE,
    IngestConfig,
    PatientSource,
    discover,
    ingest_cohort,
)
from cass_pipeline.domain.imaging.readers import dicom_identifiers, read_image
from cass_pipeline.domain.imaging.tables import IMAGE_REJECT_SCHEMA, MANIFEST_SCHEMA
from cass_pipeline.domain.privacy import Pseudonyms, identifiers_found, table_values
from cass_pipeline.domain.raw_layout import EXPECTED_IMAGES, files_outside
from cass_pipeline.domain.storage import parquet_stream, write_bytes_atomic

N_EXAMPLES = 4


class MprConfig(dg.Config):
    """Cleanup and ingestion settings (recorded in every manifest row's fingerprint)."""

    image_size: int = Field(default=128, description="output size; the paper used 512")
    text_level: int = CleanupConfig.text_level
    dilate_px: int = CleanupConfig.dilate_px
    inpaint_radius: int = CleanupConfig.inpaint_radius
    border_level: int = CleanupConfig.border_level
    min_views: int = 4
    workers: int | None = None

    def ingest_config(self, site_aliases: str | None = None) -> IngestConfig:
        cleanup = CleanupConfig(
            self.image_size, self.text_level, self.dilate_px, self.inpaint_radius, self.border_level
        )
        return IngestConfig(cleanup=cleanup, min_views=self.min_views, site_aliases=site_aliases)


def image_dir(paths: CassPaths):
    return paths.processed / "images"


def example_panel(raw: np.ndarray, config: CleanupConfig) -> np.ndarray:
    """Source with detected text painted over (identifiers unreadable), and the cleaned view."""
    cleaned, _ = clean_image(raw, config)
    masked = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    masked[raw >= config.text_level] = (0, 0, 255)
    masked = cv2.resize(masked, (cleaned.shape[1], cleaned.shape[0]), interpolation=cv2.INTER_AREA)
    return np.concatenate(
        [
            masked,
            np.full((cleaned.shape[0], 4, 3), 255, np.uint8),
            cv2.cvtColor(cleaned, cv2.COLOR_GRAY2BGR),
        ],
        axis=1,
    )


def write_examples(
    out: Path,
    sources: list[PatientSource],
    pseudonyms: Pseudonyms,
    manifest: pd.DataFrame,
    config: CleanupConfig,
) -> list[tuple[str, bytes]]:
    """Before/after panels for a few views of different branches."""
    if manifest.empty:
        return []
    picks = manifest[manifest.view_index == 0].drop_duplicates("branch").head(N_EXAMPLES)
    by_pid = {pseudonyms(s.key): s for s in sources}
    examples = []
    for row in picks.itertuples():
        source = by_pid.get(row.patient_id)
        if source is None or source.mpr_dir is None:
            continue
        path = source.mpr_dir / row.source_path
        frame = read_image(path.read_bytes(), path.suffix).frames[row.frame]
        _, png = cv2.imencode(".png", example_panel(frame, config))
        name = f"{row.patient_id}_{row.branch}.png"
        write_bytes_atomic(out / "examples" / name, png.tobytes())
        examples.append((name, png.tobytes()))
    return examples


@dg.multi_asset(
    pool="image_store",
    specs=[
        dg.AssetSpec(
            "mpr_manifest",
            deps=[raw_cohort],
            group_name="images",
            kinds={"parquet"},
            description="One row per cleaned view: pseudonymised patient, artery, "
            "branch, view index, source and sha256, store location, "
            "cleanup statistics; images in images/store/<patient>.npy.",
        ),
        dg.AssetSpec(
            "mpr_rejects",
            deps=[raw_cohort],
            group_name="images",
            kinds={"parquet"},
            description="Files, frames, series and branches not ingested, with reasons.",
        ),
        dg.AssetSpec(
            "mpr_cleanup_examples",
            deps=[raw_cohort],
            group_name="images",
            kinds={"png"},
            description="Before (detected text painted red) and after the cleanup.",
        ),
    ],
)
def mpr_images(
    context: dg.AssetExecutionContext,
    config: MprConfig,
    paths: CassPaths,
    pseudonyms: PseudonymKey,
    raw_format: RawFormat,
):
    """Discover the cohort's patients, studies and series by their DICOM tags (or folders,
    or volumes), clean every view, pack per patient; one writer of the store at a time."""
    index = raw_format.index(paths.raw)
    keys = pseudonyms.pseudonyms_for(paths.raw, index)
    with (
        paths.exclusive_writer(image_dir(paths), context.log.warning),
        cluster_pool() as (pool, engine),
    ):
        settings = config.ingest_config(raw_format.series_aliases)
        context.log.info(f"ingesting patients on {engine}")
        yield from ingest_images(
            context, settings, paths, index, keys, config.workers, pool, engine
        )


def ingest_images(
    context: dg.AssetExecutionContext,
    settings: IngestConfig,
    paths: CassPaths,
    index: CohortIndex,
    keys: Pseudonyms,
    workers: int | None,
    pool: Executor | None,
    engine: str,
):
    """Every patient's views into the store (on `pool`, else `workers` processes), then the
    manifest and rejects."""
    sources = discover(paths.raw, index)
    out = image_dir(paths)
    previous = patients_in(out / "manifest.parquet")
    skipped = processed = 0
    with (
        parquet_stream(out / "manifest.parquet", MANIFEST_SCHEMA) as manifest,
        parquet_stream(out / "rejects.parquet", IMAGE_REJECT_SCHEMA) as rejects,
    ):
        for result in ingest_cohort(
            paths.raw, out / "store", keys, settings, workers, index=index, pool=pool
        ):
            manifest.write_table(pa.Table.from_pylist(result.rows, MANIFEST_SCHEMA))
            rejects.write_table(pa.Table.from_pylist(result.rejects, IMAGE_REJECT_SCHEMA))
            skipped += result.skipped
            processed += not result.skipped
    context.log.info(f"{processed} patients ingested, {skipped} unchanged and skipped")
    settings.write(out / SETTINGS_FILE)
    frame = pd.read_parquet(out / "manifest.parquet")
    reject_frame = pd.read_parquet(out / "rejects.parquet")
    yield dg.MaterializeResult(
        asset_key="mpr_manifest",
        metadata={
            **parquet_metadata(out / "manifest.parquet"),
            "patients": frame.patient_id.nunique(),
            "previous_patients": previous,
            "branches": len(frame.groupby(["patient_id", "branch"])) if len(frame) else 0,
            "patients_processed": processed,
            "patients_skipped_unchanged": skipped,
            "ingested_on": engine,
            "image_size": settings.cleanup.size,
            "pseudonym_keys": dg.MetadataValue.json(keys.key_counts(s.key for s in sources)),
            "cleanup_fingerprint": settings.cleanup.fingerprint(),
            "views_with_text_removed": int((frame.text_pixels > 0).sum()) if len(frame) else 0,
        },
    )
    yield dg.MaterializeResult(
        asset_key="mpr_rejects",
        metadata={
            **parquet_metadata(out / "rejects.parquet"),
            "reasons": dg.MetadataValue.json(
                reject_frame.reason.str.split(":")
                .str[0]
                .str.replace(r"\s*\(.*?\)|'.*", "", regex=True)
                .value_counts()
                .to_dict()
                if len(reject_frame)
                else {}
            ),
        },
    )
    examples = write_examples(image_dir(paths), sources, keys, frame, settings.cleanup)
    yield dg.MaterializeResult(
        asset_key="mpr_cleanup_examples",
        metadata={
            "examples": len(examples),
            "path": dg.MetadataValue.path(str(out / "examples")),
            **{f"example_{i}": png_markdown(png, name) for i, (name, png) in enumerate(examples)},
        },
    )


@dg.asset_check(
    asset="mpr_manifest",
    blocking=True,
    description="Each patient's store holds exactly its manifest rows, in order.",
)
def mpr_store_matches_manifest(paths: CassPaths) -> dg.AssetCheckResult:
    frame = pd.read_parquet(image_dir(paths) / "manifest.parquet")
    broken = []
    for pid, rows in frame.groupby("patient_id"):
        store = np.load(paths.processed / rows.store_path.iloc[0], mmap_mode="r")
        if (
            store.shape[0] != len(rows)
            or sorted(rows.store_index) != list(range(len(rows)))
            or store.shape[1:] != (rows["size"].iloc[0],) * 2
        ):
            broken.append(pid)
    return dg.AssetCheckResult(
        passed=not broken,
        metadata={
            "patients": frame.patient_id.nunique(),
            "mismatched": len(broken),
            "examples": dg.MetadataValue.json(broken[:10]),
        },
    )


@dg.asset_check(
    asset="mpr_manifest",
    blocking=True,
    description="Images of at least one patient were ingested, and of at least half the "
    "patients of the previous materialisation.",
)
def mpr_manifest_has_patients(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    out = image_dir(paths)
    found = patients_in(out / "manifest.parquet")
    folders = len([p for p in (paths.raw / "mpr").glob("*") if p.is_dir()])
    rejected = len(pd.read_parquet(out / "rejects.parquet", columns=["reason"]))
    outside = files_outside(paths.raw, ("mpr", "volumes", "centrelines", "reports"))
    seen = (
        f"{folders} patient folders under {paths.raw / 'mpr'}, {rejected} rejected files "
        f"(see mpr_rejects) and {outside} files elsewhere under {paths.raw}"
    )
    return patient_count_check(
        found, previous_patients(context, "mpr_manifest"), EXPECTED_IMAGES, seen
    )


@dg.asset_check(asset="mpr_manifest", description="Branches with fewer views than is usual.")
def mpr_missing_views(paths: CassPaths) -> dg.AssetCheckResult:
    frame = pd.read_parquet(image_dir(paths) / "manifest.parquet")
    counts = frame.groupby(["patient_id", "branch"]).size()
    expected = int(counts.mode().iloc[0]) if len(counts) else 0
    short = counts[counts < expected]
    gaps = frame.groupby(["patient_id", "branch"]).view_index.agg(
        lambda v: sorted(v) != list(range(len(v)))
    )
    return dg.AssetCheckResult(
        passed=short.empty and not gaps.any(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expected_views_per_branch": expected,
            "branches": len(counts),
            "branches_with_missing_views": len(short),
            "branches_with_index_gaps": int(gaps.sum()),
        },
    )


@dg.asset_check(asset="mpr_rejects", description="Rejected inputs stay under 5% of all views.")
def mpr_rejects_ratio(paths: CassPaths) -> dg.AssetCheckResult:
    views = len(pd.read_parquet(image_dir(paths) / "manifest.parquet", columns=["patient_id"]))
    rejects = len(pd.read_parquet(image_dir(paths) / "rejects.parquet", columns=["reason"]))
    ratio = rejects / max(1, views + rejects)
    return dg.AssetCheckResult(
        passed=ratio <= 0.05,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"views": views, "rejects": rejects, "ratio": round(ratio, 4)},
    )


@dg.asset_check(
    asset="mpr_manifest",
    blocking=True,
    description="No patient identifier from the DICOM headers or folder names "
    "appears in the manifest, the rejects or the example names.",
)
def no_identifiers_in_image_outputs(paths: CassPaths, raw_format: RawFormat) -> dg.AssetCheckResult:
    identifiers = set()
    for source in discover(paths.raw, raw_format.index(paths.raw)):
        identifiers.add(source.key)
        if source.mpr_dir is not None and source.mpr_dir.is_relative_to(paths.raw / "mpr"):
            identifiers |= set(source.mpr_dir.relative_to(paths.raw / "mpr").parts[:1])
        if source.mpr_dir is not None:
            first = next(
                (f for f in source.files() if f.suffix.lower() not in {".png", ".jpg", ".jpeg"}),
                None,
            )
            if first is not None:
                identifiers |= dicom_identifiers(first)
    out = image_dir(paths)
    values = {
        name: table_values(pd.read_parquet(out / f"{name}.parquet"))
        for name in ("manifest", "rejects")
    }
    values["examples"] = [p.name for p in (out / "examples").glob("*")]
    hits = {name: len(identifiers_found(v, identifiers)) for name, v in values.items()}
    hits = {k: v for k, v in hits.items() if v}
    return dg.AssetCheckResult(
        passed=not hits,
        metadata={
            "identifiers_checked": len(identifiers),
            "outputs_with_identifiers": dg.MetadataValue.json(hits),
        },
    )

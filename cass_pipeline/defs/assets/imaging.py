"""Image stage: cleaned MPR views in a per-patient store, their manifest, rejects, examples."""

import shutil
from concurrent.futures import Executor
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from cass_pipeline.defs.assets.cohort import raw_cohort
from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.defs.executors import cluster_pool
from cass_pipeline.defs.presentation import (
    parquet_metadata,
    patient_count_check,
    patients_in,
    png_markdown,
    previous_patients,
)
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat, run_in_progress
from cass_pipeline.domain.cohort.index import CohortIndex, folder_patient_key
from cass_pipeline.domain.cohort.raw_layout import EXPECTED_IMAGES, files_outside
from cass_pipeline.domain.imaging.cleanup import example_panel
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.ingest import discover, ingest_cohort
from cass_pipeline.domain.imaging.pixel_text import PixelText, check_pixels, engine_version
from cass_pipeline.domain.imaging.readers import dicom_identifiers, read_image
from cass_pipeline.domain.imaging.tables import (
    IMAGE_REJECT_SCHEMA,
    MANIFEST_SCHEMA,
    PIXEL_TEXT_SCHEMA,
)
from cass_pipeline.domain.imaging.views import PatientSource
from cass_pipeline.domain.prediction.inbox import inbox_studies
from cass_pipeline.domain.privacy import Pseudonyms, identifiers_found, table_values
from cass_pipeline.domain.review.cohort import (
    NO_READER_STUDIES,
    READER_LABEL_SCHEMA,
    ReaderStudies,
    reader_studies,
)
from cass_pipeline.domain.storage import (
    parquet_stream,
    read_parquet_or_empty,
    write_bytes_atomic,
)
from cass_pipeline.layout import FLAT_IMAGE_STORE, DataLayout, store_entry

N_EXAMPLES = 4


class IngestRunConfig(dg.Config):
    """How the image asset runs ingestion (processes), and the settings it builds."""

    workers: int | None = Field(default=None, description="processes (default: all cores)")

    def ingest_config(self, site_aliases: str | None = None) -> IngestConfig:
        cleanup = settings_from(self, CleanupConfig, CLEANUP_FIELDS)
        return IngestConfig(cleanup, self.model_dump()["min_views"], site_aliases=site_aliases)


CLEANUP_FIELDS = {"size": "image_size"}
MprConfig = config_class(
    "MprConfig",
    IngestRunConfig,
    "Cleanup and ingestion settings (recorded in every manifest row's fingerprint); the "
    "cleanup's are the domain's `CleanupConfig`, at 128 px (the paper used 512).",
    **config_fields(CleanupConfig, rename=CLEANUP_FIELDS, defaults={"size": 128}),
    **config_fields(IngestConfig, only=("min_views",)),
)


def write_examples(
    out: Path,
    sources: list[PatientSource],
    pseudonyms: Pseudonyms,
    manifest: pd.DataFrame,
    config: CleanupConfig,
) -> tuple[list[tuple[str, bytes]], PixelText]:
    """Before/after panels for a few views of different branches, each written only when OCR
    reads none of its patient's identifiers on it; what OCR read on them."""
    if manifest.empty:
        return [], PixelText()
    picks = manifest[manifest.view_index == 0].drop_duplicates("branch").head(N_EXAMPLES)
    by_pid = {pseudonyms(s.key): s for s in sources}
    examples, read = [], PixelText()
    for row in picks.itertuples():
        source = by_pid.get(row.patient_id)
        if source is None or source.mpr_dir is None:
            continue
        path = source.mpr_dir / row.source_path
        image = read_image(path.read_bytes(), path.suffix)
        panel = example_panel(image.frames[row.frame], config, image.hints(row.frame))
        name = f"{row.patient_id}_{row.branch}.png"
        checked = check_pixels({name: panel}, source.identifiers | image.identifiers)
        read = read.merge(checked)
        if not checked.passed:
            continue
        _, png = cv2.imencode(".png", panel)
        write_bytes_atomic(out / name, png.tobytes())
        examples.append((name, png.tobytes()))
    return examples, read


@dg.multi_asset(
    pool="image_store",
    specs=[
        dg.AssetSpec(
            "mpr_manifest",
            deps=[raw_cohort, "reader_labels"],
            group_name="images",
            kinds={"parquet"},
            description="One row per cleaned view: pseudonymised patient, artery, "
            "branch, view index, source and sha256, store location, "
            f"cleanup statistics; images in {store_entry('<patient>')}.",
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
            description="Before (detected text under red boxes) and after the cleanup.",
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
    or volumes), and the inbox studies of the patients readers labelled (`reader_labels`),
    clean every view, pack per patient into a new generation of the store and publish it
    whole; one writer of the store at a time, no generator writing `raw/`."""
    with (
        paths.raw_reader(context.log.warning),
        paths.exclusive_writer(paths.layout.image_generations, context.log.warning),
        cluster_pool() as (pool, engine),
    ):
        index = raw_format.index(paths.raw)
        keys = pseudonyms.pseudonyms_for(paths.raw, index)
        settings = config.ingest_config(raw_format.series_aliases)
        labelled = read_parquet_or_empty(paths.layout.reader_labels, READER_LABEL_SCHEMA)
        readers = reader_studies(
            labelled,
            inbox_studies(Path(paths.inbox_dir), pseudonyms.secret_pseudonyms())
            if len(labelled) and paths.inbox_dir
            else [],
            lambda folder: folder_patient_key(folder) in index.patients,
        )
        context.log.info(f"ingesting patients on {engine}")
        yield from ingest_images(
            context, settings, paths, index, keys, config.workers, pool, engine, readers
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
    readers: ReaderStudies = NO_READER_STUDIES,
):
    """Every patient's views into a new generation of the store (on `pool`, else `workers`
    processes), then its manifest, rejects and examples; published once all are written, and
    the generations no reader or run uses any more removed."""
    generations, sources = paths.generations, discover(paths.raw, index)
    published = generations.current()
    previous = paths.layout.at_generation(published)
    previous_count = patients_in(previous.manifest) if published else 0
    with generations.build(context.run.run_id) as building:
        layout = paths.layout.at_generation(building)
        processed, skipped = write_image_tables(
            paths.raw,
            layout,
            keys,
            settings,
            workers,
            index,
            pool,
            previous.image_store if published else None,
            readers,
        )
        context.log.info(f"{processed} patients ingested, {skipped} unchanged and skipped")
        settings.write(layout.ingest_settings)
        frame = pd.read_parquet(layout.manifest)
        examples, read = write_examples(
            layout.image_examples, sources, keys, frame, settings.cleanup
        )
    removed = generations.remove_unused(run_in_progress(context.instance))
    remove_flat_store(paths.layout)
    counts = {
        "previous_patients": previous_count,
        "patients_processed": processed,
        "patients_skipped_unchanged": skipped,
        "ingested_on": engine,
        "reader_labelled_studies": len(readers.sources),
        "pseudonym_keys": dg.MetadataValue.json(keys.key_counts(s.key for s in sources)),
        "generation": building,
        "generations_removed": dg.MetadataValue.json(removed),
    }
    yield dg.MaterializeResult(
        asset_key="mpr_manifest", metadata=manifest_metadata(layout, frame, settings) | counts
    )
    yield dg.MaterializeResult(asset_key="mpr_rejects", metadata=rejects_metadata(layout))
    yield dg.MaterializeResult(
        asset_key="mpr_cleanup_examples",
        metadata={
            "examples": len(examples),
            "ocr": dg.MetadataValue.json(read.to_json()),
            "path": dg.MetadataValue.path(str(layout.image_examples)),
            **{f"example_{i}": png_markdown(png, name) for i, (name, png) in enumerate(examples)},
        },
    )


def remove_flat_store(layout: DataLayout) -> None:
    """The store of a CASS before generations, once a generation is published in its place."""
    for name in FLAT_IMAGE_STORE:
        old = layout.image_generations / name
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_image_tables(
    raw: Path,
    layout: DataLayout,
    keys,
    settings: IngestConfig,
    workers,
    index,
    pool,
    previous_store: Path | None = None,
    readers: ReaderStudies = NO_READER_STUDIES,
) -> tuple[int, int]:
    """Stream each patient's manifest rows and rejects as the store is written, the judged
    inbox studies of `readers` after the cohort's; (patients processed, patients unchanged
    and skipped or linked from `previous_store`)."""
    processed = skipped = 0
    with (
        parquet_stream(layout.manifest, MANIFEST_SCHEMA) as manifest,
        parquet_stream(layout.image_rejects, IMAGE_REJECT_SCHEMA) as rejects,
        parquet_stream(layout.pixel_text, PIXEL_TEXT_SCHEMA) as pixel_text,
    ):
        rejects.write_table(pa.Table.from_pylist(readers.not_ingested, IMAGE_REJECT_SCHEMA))
        for result in ingest_cohort(
            raw,
            layout.image_store,
            keys,
            settings,
            workers,
            index=index,
            pool=pool,
            previous_store=previous_store,
            also=readers.sources,
        ):
            manifest.write_table(pa.Table.from_pylist(result.rows, MANIFEST_SCHEMA))
            rejects.write_table(pa.Table.from_pylist(result.rejects, IMAGE_REJECT_SCHEMA))
            if result.pixel_text is not None:
                row = {"patient_id": result.patient_id, **result.pixel_text}
                pixel_text.write_table(pa.Table.from_pylist([row], PIXEL_TEXT_SCHEMA))
            skipped += result.skipped
            processed += not result.skipped
    return processed, skipped


def manifest_metadata(layout: DataLayout, frame: pd.DataFrame, settings: IngestConfig) -> dict:
    return {
        **parquet_metadata(layout.manifest),
        "patients": frame.patient_id.nunique(),
        "branches": len(frame.groupby(["patient_id", "branch"])) if len(frame) else 0,
        "image_size": settings.cleanup.size,
        "cleanup_fingerprint": settings.cleanup.fingerprint(),
        "views_with_text_removed": int((frame.text_pixels > 0).sum()) if len(frame) else 0,
    }


def rejects_metadata(layout: DataLayout) -> dict:
    """The rejects table and its reasons, counted without their details."""
    rejects = pd.read_parquet(layout.image_rejects)
    reasons = (
        rejects.reason.str.split(":")
        .str[0]
        .str.replace(r"\s*\(.*?\)|'.*", "", regex=True)
        .value_counts()
        .to_dict()
        if len(rejects)
        else {}
    )
    return {**parquet_metadata(layout.image_rejects), "reasons": dg.MetadataValue.json(reasons)}


@dg.asset_check(
    asset="mpr_manifest",
    blocking=True,
    description="Each patient's store holds exactly its manifest rows, in order.",
)
def mpr_store_matches_manifest(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    with paths.images_of_run(context) as layout:
        frame = pd.read_parquet(layout.manifest)
        broken = []
        for pid, rows in frame.groupby("patient_id"):
            store = np.load(layout.images / rows.store_path.iloc[0], mmap_mode="r")
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
    with paths.images_of_run(context) as layout:
        found = patients_in(layout.manifest)
        mpr = layout.raw_folders.mpr
        folders = len([p for p in mpr.glob("*") if p.is_dir()])
        rejected = len(pd.read_parquet(layout.image_rejects, columns=["reason"]))
        outside = files_outside(paths.raw)
        seen = (
            f"{folders} patient folders under {mpr}, {rejected} rejected files "
            f"(see mpr_rejects) and {outside} files elsewhere under {paths.raw}"
        )
        return patient_count_check(
            found, previous_patients(context, "mpr_manifest"), EXPECTED_IMAGES, seen
        )


@dg.asset_check(asset="mpr_manifest", description="Branches with fewer views than is usual.")
def mpr_missing_views(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    with paths.images_of_run(context) as layout:
        frame = pd.read_parquet(layout.manifest)
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
def mpr_rejects_ratio(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    with paths.images_of_run(context) as layout:
        views = len(pd.read_parquet(layout.manifest, columns=["patient_id"]))
        rejects = len(pd.read_parquet(layout.image_rejects, columns=["reason"]))
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
def no_identifiers_in_image_outputs(
    context: dg.AssetCheckExecutionContext, paths: CassPaths, raw_format: RawFormat
) -> dg.AssetCheckResult:
    with paths.images_of_run(context) as layout:
        identifiers = set()
        mpr = layout.raw_folders.mpr
        for source in discover(paths.raw, raw_format.index(paths.raw)):
            identifiers.add(source.key)
            if source.mpr_dir is not None and source.mpr_dir.is_relative_to(mpr):
                identifiers |= set(source.mpr_dir.relative_to(mpr).parts[:1])
            if source.mpr_dir is not None:
                first = next(
                    (
                        f
                        for f in source.files()
                        if f.suffix.lower() not in {".png", ".jpg", ".jpeg"}
                    ),
                    None,
                )
                if first is not None:
                    identifiers |= dicom_identifiers(first)
        layout = paths.layout
        tables = {"manifest": layout.manifest, "rejects": layout.image_rejects}
        values = {name: table_values(pd.read_parquet(path)) for name, path in tables.items()}
        values["examples"] = [p.name for p in layout.image_examples.glob("*")]
        hits = {name: len(identifiers_found(v, identifiers)) for name, v in values.items()}
        hits = {k: v for k, v in hits.items() if v}
        return dg.AssetCheckResult(
            passed=not hits,
            metadata={
                "identifiers_checked": len(identifiers),
                "outputs_with_identifiers": dg.MetadataValue.json(hits),
            },
        )


def pixel_text_summary(context, paths: CassPaths) -> tuple[pd.DataFrame, dict]:
    """The OCR table of the run's stored views and what it says it read, for the two checks."""
    with paths.images_of_run(context) as layout:
        table = pd.read_parquet(layout.pixel_text)
    errors = table.error.dropna()
    return table, {
        "engine": f"Tesseract {engine_version()} (tesserocr), English model",
        "read": "the first, middle and last stored view of every branch, at the stored size",
        "patients": len(table),
        "views_read": int(table.views_read.sum()),
        "ocr_seconds": round(float(table.seconds.sum()), 3),
        "patients_not_read": len(errors),
        "why_not_read": errors.iloc[0] if len(errors) else "",
    }


def flagged_views(table: pd.DataFrame, column: str) -> list[str]:
    """`<pseudonym>/<branch>/<view index>` of the views with findings in `column`."""
    return [
        f"{row.patient_id}/{view}" for row in table.itertuples() for view in getattr(row, column)
    ]


@dg.asset_check(
    asset="mpr_manifest",
    blocking=True,
    description="OCR reads no token of the patient's identifiers (DICOM and report headers, "
    "patient key) in the stored views, and every patient's views could be read.",
)
def no_identifier_in_stored_pixels(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    table, read = pixel_text_summary(context, paths)
    views = flagged_views(table, "identifier_views")
    return dg.AssetCheckResult(
        passed=not views and not read["patients_not_read"],
        metadata={
            **read,
            "views_with_identifiers": len(views),
            "views": dg.MetadataValue.json(views[:20]),
            "what_to_do": "open the view with `cass inspect <pseudonym>`, add the overlay's "
            "style to the cleanup (docs/imaging.md) and rerun",
        },
    )


@dg.asset_check(
    asset="mpr_manifest",
    description="OCR reads no other confident text in the stored views.",
)
def no_text_in_stored_pixels(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    table, read = pixel_text_summary(context, paths)
    views = flagged_views(table, "text_views")
    return dg.AssetCheckResult(
        passed=not views,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **read,
            "views_with_text": len(views),
            "views": dg.MetadataValue.json(views[:20]),
        },
    )

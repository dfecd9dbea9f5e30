"""Report stage: de-identified reports, mentions, branch labels, patient CAD-RADS, rejects."""

import dagster as dg
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cass_pipeline.defs.assets.cohort import raw_cohort
from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.defs.presentation import (
    parquet_metadata,
    patient_count_check,
    patients_in,
    previous_patients,
    short_cell,
)
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.cohort.index import CohortIndex
from cass_pipeline.domain.cohort.raw_layout import EXPECTED_REPORTS, files_outside
from cass_pipeline.domain.cohort.report_sources import report_identifiers, report_sources
from cass_pipeline.domain.privacy import Pseudonyms, table_values
from cass_pipeline.domain.reports.config import ReportSettings
from cass_pipeline.domain.reports.deid import identifiers_in_reports
from cass_pipeline.domain.reports.labels import READER
from cass_pipeline.domain.reports.pipeline import add_reader_labels, parse_cohort_reports
from cass_pipeline.domain.reports.tables import (
    BRANCH_LABEL_SCHEMA,
    LABEL_REVIEW_SCHEMA,
    MENTION_SCHEMA,
    PATIENT_LABEL_SCHEMA,
    REJECT_SCHEMA,
    REPORT_SCHEMA,
    TO_REVIEW,
    report_tables,
)
from cass_pipeline.domain.reports.vocabulary import VocabularyError, load_vocabulary, site_files
from cass_pipeline.domain.review.cohort import READER_LABEL_SCHEMA, reader_report_labels
from cass_pipeline.domain.storage import read_parquet_or_empty, write_parquet_atomic

SCHEMAS = {
    "deidentified_reports": REPORT_SCHEMA,
    "report_mentions": MENTION_SCHEMA,
    "branch_labels": BRANCH_LABEL_SCHEMA,
    "patient_labels": PATIENT_LABEL_SCHEMA,
    "report_rejects": REJECT_SCHEMA,
    "label_review": LABEL_REVIEW_SCHEMA,
}
DESCRIPTIONS = {
    "deidentified_reports": "Report text with names, dates, MRNs, accession numbers, phone "
    "numbers and addresses replaced; one row per pseudonymised patient.",
    "report_mentions": "Every stenosis finding and modifier: sentence, character span, branch, "
    "grade, percent range, negation, uncertainty.",
    "branch_labels": "Branch class (most severe finding) with the text spans it rests on.",
    "patient_labels": "Patient class and CAD-RADS 2.0 category with modifiers.",
    "report_rejects": "Reports that could not be used, with the reason.",
    "label_review": "Each report's flags with the sentence that shows them; reports `to review` "
    "are held out of training until a reviewer's row under raw/reviews overrides or accepts "
    "their labels.",
}
#: Share of reports held for review above which the review check warns.
REVIEW_SHARE_WARNING = 0.05


ReportConfig = config_class(
    "ReportConfig",
    dg.Config,
    "How reports are read: the domain's `ReportSettings`.",
    **config_fields(ReportSettings),
)


@dg.multi_asset(
    pool="report_tables",
    specs=[
        dg.AssetSpec(
            name,
            deps=[raw_cohort, "reader_labels"],
            group_name="reports",
            description=DESCRIPTIONS[name],
            kinds={"spacy", "parquet"},
        )
        for name in SCHEMAS
    ],
)
def report_labels(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    paths: CassPaths,
    pseudonyms: PseudonymKey,
    raw_format: RawFormat,
):
    """Read every report under raw/reports (text files or RIS tables), link it to its
    patient's study, de-identify, parse and label it, and add the patients readers labelled
    (`reader_labels`); one writer of the tables at a time, no generator writing `raw/`
    meanwhile."""
    with (
        paths.raw_reader(context.log.warning),
        paths.exclusive_writer(paths.layout.reports, context.log.warning),
    ):
        index = raw_format.index(paths.raw)
        keys = pseudonyms.pseudonyms_for(paths.raw, index)
        files = site_files(raw_format.report_vocabulary)
        try:
            load_vocabulary(files)
        except VocabularyError as error:
            raise dg.Failure(f"report vocabulary: {error}") from error
        yield from label_reports(context, config, paths, index, keys, files)


def label_reports(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    paths: CassPaths,
    index: CohortIndex,
    keys: Pseudonyms,
    vocabulary: tuple[str, ...] = (),
):
    previous = patients_in(paths.layout.report_table("deidentified_reports"))
    settings = settings_from(config, ReportSettings)
    cohort = parse_cohort_reports(
        index,
        keys,
        workers=settings.workers,
        bare_50_significant=settings.bare_50_significant,
        reviews=paths.layout.raw_folders.reviews,
        site_files=vocabulary,
    )
    readers = read_parquet_or_empty(paths.layout.reader_labels, READER_LABEL_SCHEMA)
    add_reader_labels(cohort, reader_report_labels(readers))
    tables = report_tables(cohort, settings.hold_flagged)
    context.log.info(f"{len(cohort.reports)} reports parsed, {len(cohort.rejects)} rejected")
    for name, table in tables.items():
        path = paths.layout.report_table(name)
        write_parquet_atomic(table, path, SCHEMAS[name])
        metadata = parquet_metadata(path)
        if name == "deidentified_reports":
            with_report = [p.key for p in index.patients.values() if p.report is not None]
            metadata["pseudonym_keys"] = dg.MetadataValue.json(keys.key_counts(with_report))
            metadata["previous_patients"] = previous
        if name == "report_rejects":
            metadata["reasons"] = dg.MetadataValue.json(
                table.to_pandas().groupby("reason").size().to_dict() if table.num_rows else {}
            )
        if name == "branch_labels":
            classes = table.column("stenosis_class").to_pandas().value_counts(dropna=False)
            metadata["class_counts"] = dg.MetadataValue.json(
                {str(k): int(v) for k, v in classes.items()}
            )
        if name == "patient_labels":
            counts = table.column("cad_rads").to_pandas().value_counts(dropna=False)
            metadata["cad_rads_counts"] = dg.MetadataValue.json(
                {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}
            )
            metadata["held_for_review"] = int(pc.sum(table.column("held_for_review")).as_py() or 0)
            metadata["reviewed"] = int(pc.sum(table.column("reviewed")).as_py() or 0)
        if name == "label_review":
            metadata.update(review_metadata(table.to_pandas()))
        yield dg.MaterializeResult(asset_key=name, metadata=metadata)


def review_metadata(review: pd.DataFrame) -> dict:
    """The review queue as the UI shows it: counts per flag and status, the queue's rows."""
    queue = review[review.status == TO_REVIEW]
    counts = (
        review.groupby(["flag", "status"]).size().unstack(fill_value=0) if len(review) else None
    )
    columns = ["patient_id", "flag", "detail", "evidence", "branch_grades"]
    return {
        "reports_to_review": int(queue.patient_id.nunique()),
        "flags": dg.MetadataValue.md(counts.to_markdown() if counts is not None else "none"),
        "queue": dg.MetadataValue.table(
            records=[
                dg.TableRecord({c: short_cell(str(row[c]), 120) for c in columns})
                for row in queue[columns].head(50).to_dict("records")
            ],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
        ),
    }


@dg.asset_check(
    asset="label_review",
    description=f"Share of parsed reports held out of training for review, warns above "
    f"{REVIEW_SHARE_WARNING:.0%}.",
)
def review_queue_share(paths: CassPaths) -> dg.AssetCheckResult:
    patients = pd.read_parquet(
        paths.layout.patient_labels, columns=["patient_id", "held_for_review", "reviewed"]
    )
    held = int(patients.held_for_review.sum())
    share = held / len(patients) if len(patients) else 0.0
    return dg.AssetCheckResult(
        passed=share <= REVIEW_SHARE_WARNING,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reports": len(patients),
            "held_for_review": held,
            "reviewed": int(patients.reviewed.sum()),
            "share_held": round(share, 4),
            "how_to_review": "rows of patient_id, branch, label, note in a CSV or YAML file "
            "under raw/reviews (docs/reports.md)",
        },
    )


@dg.asset_check(
    asset="deidentified_reports",
    blocking=True,
    description="Reports of at least one patient were read, and of at least half the "
    "patients of the previous materialisation.",
)
def reports_have_patients(
    context: dg.AssetCheckExecutionContext, paths: CassPaths, raw_format: RawFormat
) -> dg.AssetCheckResult:
    found = patients_in(paths.layout.report_table("deidentified_reports"))
    folder = paths.layout.raw_folders.reports
    files = len(report_sources(folder, raw_format.columns())[0])
    rejected = pq.read_table(paths.layout.report_rejects).num_rows
    outside = files_outside(paths.raw)
    seen = (
        f"{files} reports under {folder}, {rejected} rejected "
        f"(see report_rejects) and {outside} files elsewhere under {paths.raw}"
    )
    previous = previous_patients(context, "deidentified_reports")
    return patient_count_check(found, previous, EXPECTED_REPORTS, seen)


@dg.asset_check(asset="branch_labels", description="Share of accepted reports with a label.")
def branch_label_coverage(paths: CassPaths) -> dg.AssetCheckResult:
    reports = pq.read_table(
        paths.layout.report_table("deidentified_reports"), columns=["patient_id"]
    )
    labels = pd.read_parquet(paths.layout.branch_labels)
    labels = labels[labels.source != READER]  # readers' patients have no report
    stages = pd.read_parquet(paths.layout.report_rejects, columns=["stage"]).stage
    rejects = int((stages != READER).sum())
    labelled = labels.dropna(subset=["stenosis_class"]).patient_id.nunique()
    total = reports.num_rows + rejects
    coverage = labelled / total if total else 0.0
    return dg.AssetCheckResult(
        passed=coverage >= 0.95,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reports": total,
            "patients_with_labels": labelled,
            "rejected": rejects,
            "coverage": round(coverage, 4),
            "unlabelled_branches": int(labels.stenosis_class.isna().sum()),
        },
    )


@dg.asset_check(
    asset="branch_labels",
    blocking=True,
    description="Every branch label points at text spans that say what it claims.",
)
def branch_labels_traceable(paths: CassPaths) -> dg.AssetCheckResult:
    texts = (
        pd.read_parquet(
            paths.layout.report_table("deidentified_reports"), columns=["patient_id", "text"]
        )
        .set_index("patient_id")
        .text
    )
    labels = pd.read_parquet(paths.layout.branch_labels)
    broken = []
    for row in labels[labels.source == "report"].itertuples():
        text = texts.get(row.patient_id, "")
        spans = list(zip(row.evidence_start, row.evidence_end, row.evidence, strict=True))
        if not spans or any(text[s:e] != quote for s, e, quote in spans):
            broken.append(f"{row.patient_id}/{row.branch}")
    return dg.AssetCheckResult(
        passed=not broken,
        metadata={
            "labels": len(labels),
            "untraceable": len(broken),
            "examples": dg.MetadataValue.json(broken[:10]),
        },
    )


@dg.asset_check(
    asset="deidentified_reports",
    blocking=True,
    description="No identifier from a report header appears in any report output.",
)
def no_identifiers_in_report_outputs(
    paths: CassPaths, raw_format: RawFormat
) -> dg.AssetCheckResult:
    identifiers = set()
    for report in report_sources(paths.layout.raw_folders.reports, raw_format.columns())[0]:
        identifiers |= report_identifiers(report)
    hits = {}
    for name in SCHEMAS:
        found = len(
            identifiers_in_reports(
                table_values(pd.read_parquet(paths.layout.report_table(name))), identifiers
            )
        )
        if found:
            hits[name] = found
    return dg.AssetCheckResult(
        passed=not hits,
        metadata={
            "identifiers_checked": len(identifiers),
            "tables_with_identifiers": dg.MetadataValue.json(hits),
        },
    )

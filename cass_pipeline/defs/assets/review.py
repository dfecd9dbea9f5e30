"""People in the loop: how often the readers agree with CASS, and (a setting, off by
default) the patients readers labelled, from the review app's verdicts."""

import dagster as dg

from cass_pipeline.defs.presentation import parquet_metadata, preview_markdown
from cass_pipeline.defs.resources import CassPaths, ReviewDatabase
from cass_pipeline.domain.review.cohort import (
    LEFT_OUT_SCHEMA,
    READER_LABEL_SCHEMA,
    verdict_labels,
)
from cass_pipeline.domain.review.decisions import (
    AGREEMENT_SCHEMA,
    agreement,
    agreement_by_week,
    verdict_table,
)
from cass_pipeline.domain.storage import read_parquet_or_empty, write_parquet_atomic


@dg.asset(group_name="prediction", kinds={"parquet"})
def reader_agreement(paths: CassPaths, review_database: ReviewDatabase) -> dg.MaterializeResult:
    """CASS against the readers' verdicts in the review app's reading room, per ISO week and
    overall: verdicts, share agreed, CAD-RADS linearly weighted kappa, and referral
    sensitivity and specificity against the readers' categories (each reader's newest
    verdict per patient)."""
    table = verdict_table(review_database.store().verdicts())
    weekly = agreement_by_week(table)
    write_parquet_atomic(weekly, paths.layout.reader_agreement, AGREEMENT_SCHEMA)
    overall = agreement(table)
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(paths.layout.reader_agreement),
            **{f"overall_{k}": v for k, v in overall.items() if v is not None},
            "readers": int(table.reader.nunique()) if len(table) else 0,
            "by_week": preview_markdown(weekly, rows=26),
        }
    )


@dg.asset_check(
    asset=reader_agreement,
    description="Warns when CASS's CAD-RADS kappa against its readers falls below the set "
    "value (`min_kappa` of the review_database resource) once there are enough verdicts.",
)
def reader_agreement_holds(review_database: ReviewDatabase) -> dg.AssetCheckResult:
    figures = agreement(verdict_table(review_database.store().verdicts()))
    kappa, count = figures["kappa_linear"], figures["verdicts"]
    enough = count >= review_database.min_verdicts and kappa is not None
    return dg.AssetCheckResult(
        passed=not enough or kappa >= review_database.min_kappa,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"kappa {kappa:.2f} against the readers (at least {review_database.min_kappa})"
            if enough
            else f"{count} verdicts: too few to judge (at least {review_database.min_verdicts})"
        ),
        metadata={k: v for k, v in figures.items() if v is not None},
    )


@dg.asset(group_name="reports", kinds={"parquet"})
def reader_labels(paths: CassPaths, review_database: ReviewDatabase) -> dg.MaterializeResult:
    """The branch classes readers gave in the reading room, for the next training cohort when
    `CASS_READER_LABELS` says so (`corrected`: the patients a reader corrected; `judged`:
    every judged patient; `off`, the default: none). The images and report stages take
    these patients in; the splits keep them in training only."""
    store = review_database.store()
    admins = frozenset(name for name, role in store.roles().items() if role == "admin")
    try:
        table, left_out = verdict_labels(store.verdicts(), review_database.reader_labels, admins)
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    write_parquet_atomic(table, paths.layout.reader_labels, READER_LABEL_SCHEMA)
    write_parquet_atomic(left_out, paths.layout.reader_label_rejects, LEFT_OUT_SCHEMA)
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(paths.layout.reader_labels),
            "mode": review_database.reader_labels,
            "patients": int(table.patient_id.nunique()),
            "corrected_patients": int(table.drop_duplicates("patient_id").corrected.sum()),
            "left_out": len(left_out),
            "left_out_reasons": dg.MetadataValue.json(left_out.reason.value_counts().to_dict()),
            "left_out_preview": preview_markdown(left_out),
        }
    )


@dg.asset_check(
    asset=reader_labels,
    description="Warns when judged patients could not become labels (readers who differ, "
    "no study recorded, a category the branches contradict), with the reasons.",
)
def reader_labels_all_used(paths: CassPaths) -> dg.AssetCheckResult:
    left_out = read_parquet_or_empty(paths.layout.reader_label_rejects, LEFT_OUT_SCHEMA)
    return dg.AssetCheckResult(
        passed=left_out.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "left_out": len(left_out),
            "reasons": dg.MetadataValue.json(left_out.reason.value_counts().to_dict()),
        },
    )

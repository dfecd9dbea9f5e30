"""Declared schemas of the report stage's Parquet outputs and the rows that fill them."""

from __future__ import annotations

import pyarrow as pa

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH, CLASS_INDEX
from cass_pipeline.domain.reports.config import ReportSettings
from cass_pipeline.domain.reports.flags import held_for_review
from cass_pipeline.domain.reports.labels import ReportLabels
from cass_pipeline.domain.reports.pipeline import ParsedCohort

REPORT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("text", pa.string()),
        ("text_sha256", pa.string()),
        ("n_chars", pa.int32()),
        ("redacted_names", pa.int32()),
        ("redacted_dates", pa.int32()),
        ("redacted_ids", pa.int32()),
        ("redacted_contacts", pa.int32()),
    ]
)
MENTION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("sentence_index", pa.int32()),
        ("start_char", pa.int32()),
        ("end_char", pa.int32()),
        ("text", pa.string()),
        ("concept", pa.string()),
        ("branch", pa.string()),
        ("grade", pa.string()),
        ("pct_low", pa.int16()),
        ("pct_high", pa.int16()),
        ("negated", pa.bool_()),
        ("uncertain", pa.bool_()),
        ("modifier", pa.string()),
        ("bare_50", pa.bool_()),
        ("on_graft", pa.bool_()),
    ]
)
BRANCH_LABEL_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("branch", pa.string()),
        ("artery", pa.string()),
        ("stenosis_class", pa.string()),
        ("label", pa.int8()),
        ("pct_low", pa.int16()),
        ("pct_high", pa.int16()),
        ("non_diagnostic", pa.bool_()),
        ("modifiers", pa.list_(pa.string())),
        ("evidence", pa.list_(pa.string())),
        ("evidence_start", pa.list_(pa.int32())),
        ("evidence_end", pa.list_(pa.int32())),
        ("rule", pa.string()),
        ("source", pa.string()),
        ("review_note", pa.string()),
    ]
)
PATIENT_LABEL_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("patient_class", pa.string()),
        ("cad_rads", pa.string()),
        ("cad_rads_modifiers", pa.list_(pa.string())),
        ("stated_cad_rads", pa.string()),
        ("stated_agrees", pa.bool_()),
        ("calcium_score", pa.float64()),
        ("dominance", pa.string()),
        ("n_branches", pa.int32()),
        ("n_labelled_branches", pa.int32()),
        ("flags", pa.list_(pa.string())),
        ("held_for_review", pa.bool_()),
        ("reviewed", pa.bool_()),
    ]
)
#: One row per flag of a report (`flags.py`): the review queue is the rows `to review`.
LABEL_REVIEW_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("status", pa.string()),
        ("flag", pa.string()),
        ("detail", pa.string()),
        ("branch", pa.string()),
        ("evidence", pa.string()),
        ("evidence_start", pa.int32()),
        ("evidence_end", pa.int32()),
        ("branch_grades", pa.string()),
        ("stated_cad_rads", pa.string()),
        ("cad_rads", pa.string()),
    ]
)
TO_REVIEW, REVIEWED, NOTE = "to review", "reviewed", "note"
REJECT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
    ]
)


def branch_grades(labels: ReportLabels) -> str:
    """The branch grades found, as a reviewer reads them: "LAD 50-69% significant; RCA -"."""
    return "; ".join(
        f"{lab.branch} "
        + ("-" if lab.pct_low is None else f"{lab.pct_low}-{lab.pct_high}% {lab.stenosis_class}")
        + (" (review)" if lab.source == "review" else "")
        for lab in labels.branches.values()
    )


def review_status(labels: ReportLabels, holds: bool, hold_flagged: bool) -> str:
    if not holds:
        return NOTE
    return REVIEWED if labels.reviewed else TO_REVIEW if hold_flagged else NOTE


def branch_rows(pid: str, labels: ReportLabels) -> list[dict]:
    """A patient's rows of `branch_labels`."""
    return [
        {
            "patient_id": pid,
            "branch": lab.branch,
            "artery": ARTERY_OF_BRANCH[lab.branch],
            "stenosis_class": lab.stenosis_class,
            "label": CLASS_INDEX.get(lab.stenosis_class),
            "pct_low": lab.pct_low,
            "pct_high": lab.pct_high,
            "non_diagnostic": lab.non_diagnostic,
            "modifiers": lab.modifiers,
            "evidence": lab.evidence,
            "evidence_start": [s for s, _ in lab.evidence_spans],
            "evidence_end": [e for _, e in lab.evidence_spans],
            "rule": lab.rule,
            "source": lab.source,
            "review_note": lab.note,
        }
        for lab in labels.branches.values()
    ]


def patient_row(pid: str, labels: ReportLabels, hold_flagged: bool) -> dict:
    """A patient's row of `patient_labels`."""
    stated = labels.reading.stated_cad_rads
    return {
        "patient_id": pid,
        "patient_class": labels.patient_class,
        "cad_rads": labels.cad_rads,
        "cad_rads_modifiers": labels.modifiers,
        "stated_cad_rads": stated,
        "stated_agrees": None if stated is None else stated == labels.cad_rads,
        "calcium_score": labels.reading.calcium_score,
        "dominance": labels.reading.dominance,
        "n_branches": len(labels.branches),
        "n_labelled_branches": sum(
            lab.stenosis_class is not None for lab in labels.branches.values()
        ),
        "flags": sorted({flag.kind for flag in labels.flags}),
        "held_for_review": hold_flagged and held_for_review(labels),
        "reviewed": labels.reviewed,
    }


def report_tables(
    cohort: ParsedCohort, hold_flagged: bool = ReportSettings.hold_flagged
) -> dict[str, pa.Table]:
    """The six tables of the report stage; the patients readers labelled (no report behind
    them) have rows in `branch_labels` and `patient_labels` only."""
    reports, mentions, branches, patients, review = [], [], [], [], []
    for report in cohort.reports:
        pid, labels, counts = report.patient_id, report.labels, report.redactions
        reports.append(
            {
                "patient_id": pid,
                "text": report.text,
                "text_sha256": report.text_sha256,
                "n_chars": len(report.text),
                "redacted_names": counts.get("NAME", 0),
                "redacted_dates": counts.get("DATE", 0) + counts.get("DOB", 0),
                "redacted_ids": sum(counts.get(k, 0) for k in ("MRN", "ACCESSION", "ID")),
                "redacted_contacts": counts.get("PHONE", 0) + counts.get("ADDRESS", 0),
            }
        )
        for m in labels.reading.mentions:
            for branch in m.branches or [None]:
                mentions.append(
                    {
                        "patient_id": pid,
                        "sentence_index": m.sentence_index,
                        "start_char": m.start_char,
                        "end_char": m.end_char,
                        "text": m.text,
                        "concept": m.concept,
                        "branch": branch,
                        "grade": m.grade,
                        "pct_low": m.pct_low,
                        "pct_high": m.pct_high,
                        "negated": m.negated,
                        "uncertain": m.uncertain,
                        "modifier": m.modifier,
                        "bare_50": m.bare_50,
                        "on_graft": m.on_graft,
                    }
                )
        branches += branch_rows(pid, labels)
        patients.append(patient_row(pid, labels, hold_flagged))
        stated = labels.reading.stated_cad_rads
        grades = branch_grades(labels) if labels.flags else ""
        for flag in labels.flags:
            review.append(
                {
                    "patient_id": pid,
                    "status": review_status(labels, flag.holds, hold_flagged),
                    "flag": flag.kind,
                    "detail": flag.detail,
                    "branch": flag.branch,
                    "evidence": flag.evidence,
                    "evidence_start": flag.start_char,
                    "evidence_end": flag.end_char,
                    "branch_grades": grades,
                    "stated_cad_rads": stated,
                    "cad_rads": labels.cad_rads,
                }
            )
    for pid, labels in sorted(cohort.labelled_by_readers.items()):
        branches += branch_rows(pid, labels)
        patients.append(patient_row(pid, labels, hold_flagged))
    rejects = [
        {"patient_id": r.patient_id, "stage": r.stage, "reason": r.reason} for r in cohort.rejects
    ]
    return {
        "deidentified_reports": pa.Table.from_pylist(reports, REPORT_SCHEMA),
        "report_mentions": pa.Table.from_pylist(mentions, MENTION_SCHEMA),
        "branch_labels": pa.Table.from_pylist(branches, BRANCH_LABEL_SCHEMA),
        "patient_labels": pa.Table.from_pylist(patients, PATIENT_LABEL_SCHEMA),
        "report_rejects": pa.Table.from_pylist(rejects, REJECT_SCHEMA),
        "label_review": pa.Table.from_pylist(review, LABEL_REVIEW_SCHEMA),
    }

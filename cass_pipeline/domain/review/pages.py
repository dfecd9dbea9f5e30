"""What the review app shows, read from the pipeline's own outputs: the label review queue
(`label_review`, `deidentified_reports`, `branch_labels`) and the reading room (`worklist`,
each patient's `prediction.json` and `report.png`). Pseudonyms only, as those tables hold."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cass_pipeline.domain.prediction.worklist import WORKLIST_SCHEMA
from cass_pipeline.domain.reports.flags import HOLDING
from cass_pipeline.domain.reports.tables import (
    BRANCH_LABEL_SCHEMA,
    LABEL_REVIEW_SCHEMA,
    REPORT_SCHEMA,
    TO_REVIEW,
)
from cass_pipeline.domain.review.decisions import LABEL_CHOICES
from cass_pipeline.domain.storage import read_parquet_or_empty
from cass_pipeline.layout import DataLayout

#: A pseudonym as CASS writes them; anything else in a URL is refused before any file is read.
PSEUDONYM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class BranchRow:
    """One branch of a report under review: the parser's label (as a reviewer's choice), the
    rule that gave it, and the sentence it came from."""

    branch: str
    parsed: str
    rule: str
    evidence: str


@dataclass(frozen=True)
class ReportUnderReview:
    """A flagged report: its de-identified text in pieces (evidence pieces carry the flag that
    points at them), its flags and its branches."""

    patient_id: str
    pieces: list[tuple[str, str | None]]
    flags: list[dict]
    branches: list[BranchRow]
    cad_rads: str | None


def review_queue(layout: DataLayout) -> pd.DataFrame:
    """One row per report to review: its flags, whether one holds it out of training, its
    CAD-RADS as parsed; holding flags first, then by pseudonym."""
    review = read_parquet_or_empty(layout.label_review, LABEL_REVIEW_SCHEMA)
    queue = review[review.status == TO_REVIEW] if len(review) else review
    rows = [
        {
            "patient_id": patient,
            "flags": sorted(set(part.flag)),
            "holding": bool(part.flag.isin(HOLDING).any()),
            "cad_rads": part.cad_rads.iloc[0],
        }
        for patient, part in queue.groupby("patient_id", sort=True)
    ]
    table = pd.DataFrame(rows, columns=["patient_id", "flags", "holding", "cad_rads"])
    return table.sort_values(["holding", "patient_id"], ascending=[False, True]).reset_index(
        drop=True
    )


def parsed_choice(row) -> str:
    """A parsed branch label as the reviewer's choice it equals: a grade's range, a range of
    its own, a class alone, or none."""
    if not isinstance(row.stenosis_class, str):
        return "none"
    if pd.notna(row.pct_low) and pd.notna(row.pct_high):
        low, high = int(row.pct_low), int(row.pct_high)
        return f"{low}%" if low == high else f"{low}-{high}%"
    return row.stenosis_class


def choices_for(parsed: str) -> dict[str, str]:
    """The labels a reviewer may pick for a branch: the grades, the classes, none, and the
    parser's own range where it is none of those."""
    if parsed in LABEL_CHOICES:
        return LABEL_CHOICES
    return {parsed: f"{parsed} (as parsed)", **LABEL_CHOICES}


def report_under_review(layout: DataLayout, patient: str) -> ReportUnderReview | None:
    """The flagged report of `patient`, or None when it is not in the review table."""
    review = read_parquet_or_empty(layout.label_review, LABEL_REVIEW_SCHEMA)
    flags = review[review.patient_id == patient] if len(review) else review
    if not len(flags):
        return None
    reports = read_parquet_or_empty(layout.report_table("deidentified_reports"), REPORT_SCHEMA)
    texts = reports.loc[reports.patient_id == patient, "text"] if len(reports) else []
    text = texts.iloc[0] if len(texts) else ""
    spans = sorted(
        (int(r.evidence_start), int(r.evidence_end), r.flag)
        for r in flags.itertuples()
        if pd.notna(r.evidence_start) and 0 <= r.evidence_start < r.evidence_end <= len(text)
    )
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for start, end, flag in spans:
        if start < at:  # overlapping evidence: the earlier one is already marked
            continue
        pieces += [(text[at:start], None), (text[start:end], flag)]
        at = end
    pieces.append((text[at:], None))
    labels = read_parquet_or_empty(layout.branch_labels, BRANCH_LABEL_SCHEMA)
    own = labels[labels.patient_id == patient] if len(labels) else labels
    branches = [
        BranchRow(r.branch, parsed_choice(r), r.rule, " ".join(r.evidence))
        for r in own.sort_values("branch").itertuples()
    ]
    rows = flags[["flag", "detail", "branch", "status"]].to_dict("records")
    holding = [f for f in rows if f["flag"] in HOLDING]
    others = [f for f in rows if f["flag"] not in HOLDING]
    return ReportUnderReview(
        patient, pieces, holding + others, branches, flags.cad_rads.iloc[0] or None
    )


def reading_list(layout: DataLayout) -> pd.DataFrame:
    """The worklist, referred first (as it is written)."""
    return read_parquet_or_empty(layout.worklist, WORKLIST_SCHEMA)


def prediction_file(layout: DataLayout, patient: str, name: str) -> Path | None:
    """The file `name` of `patient`'s prediction (its document or a picture), or None."""
    path = layout.prediction(patient) / name
    return path if path.is_file() else None


def prediction_of(layout: DataLayout, patient: str, document_name: str) -> dict | None:
    """The prediction document of `patient`, or None."""
    path = prediction_file(layout, patient, document_name)
    return None if path is None else json.loads(path.read_text())

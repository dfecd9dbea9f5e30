"""From people's decisions to what the pipeline reads: a flagged report's labels settled by
its reviewers (or an admin's adjudication) become rows of the override file that
`reports/review.py` already reads from `raw/reviews/`; readers' verdicts become agreement
figures over time."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from cass_pipeline.domain.anatomy import CATEGORIES, GRADE_RANGE, STENOSIS_CLASSES
from cass_pipeline.domain.evaluation.grades import AUC_CUTS, category_kappa
from cass_pipeline.domain.reports.review import ACCEPT, COLUMNS
from cass_pipeline.domain.review.store import Decision, Verdict
from cass_pipeline.domain.storage import write_bytes_atomic

#: The file the review app keeps under `raw/reviews/`, rewritten whole after each decision.
OVERRIDE_FILE = "review-app.csv"
#: The labels a reviewer picks from, as the override file writes them: a CAD-RADS grade's
#: percent range, a class alone, or no label.
LABEL_CHOICES: dict[str, str] = {
    **{
        f"{low}-{high}%" if low != high else f"{low}%": (
            f"{grade} ({low}-{high}%)" if low != high else f"{grade} ({low}%)"
        ).replace("none (", "no stenosis (")
        for grade, (low, high) in GRADE_RANGE.items()
    },
    **{c: c.replace("_", " ") + " (class only)" for c in STENOSIS_CLASSES},
    "none": "no label (not evaluable)",
}


def settled(decisions: Iterable[Decision]) -> tuple[dict[str, Decision], dict[str, list]]:
    """Per patient the decision that stands, and the patients whose reviewers disagree (their
    decisions side by side): an admin's newest decision adjudicates; else the reviewers'
    newest decisions stand when they agree."""
    by_patient: dict[str, list[Decision]] = defaultdict(list)
    for decision in decisions:
        by_patient[decision.patient_id].append(decision)
    standing, disputed = {}, {}
    for patient, made in by_patient.items():
        admins = [d for d in made if d.role == "admin"]
        if admins:
            standing[patient] = max(admins, key=lambda d: d.at)
        elif len({tuple(sorted(d.labels.items())) for d in made}) == 1:
            standing[patient] = max(made, key=lambda d: d.at)
        else:
            disputed[patient] = sorted(made, key=lambda d: d.at)
    return standing, disputed


def override_rows(standing: dict[str, Decision]) -> list[dict[str, str]]:
    """The override file's rows: each branch label decided, or `accept` for a report whose
    parsed labels were kept; the note says who decided."""
    rows = []
    for patient in sorted(standing):
        decision = standing[patient]
        note = f"review app: {decision.user} ({decision.role})"
        if decision.comment:
            note += f": {decision.comment}"
        if not decision.labels:
            rows.append({"patient_id": patient, "branch": "", "label": ACCEPT, "note": note})
        for branch, label in sorted(decision.labels.items()):
            rows.append({"patient_id": patient, "branch": branch, "label": label, "note": note})
    return rows


def write_overrides(folder: Path, decisions: Iterable[Decision]) -> Path:
    """The review app's override file under `folder` (raw/reviews), rewritten atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(override_rows(settled(decisions)[0]))
    path = folder / OVERRIDE_FILE
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return path


#: One row per verdict: what CASS said and what the reader read (their category, or CASS's
#: when they agreed).
VERDICT_COLUMNS = [
    "patient_id",
    "reader",
    "at",
    "model_version",
    "agree",
    "cass_cad_rads",
    "reader_cad_rads",
    "cass_refer",
]


def verdict_table(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """Each patient's newest verdict per reader, with the week it was given in."""
    rows = [
        {
            "patient_id": v.patient_id,
            "reader": v.user,
            "at": datetime.fromtimestamp(v.at, UTC),
            "model_version": v.model_version,
            "agree": v.agree,
            "cass_cad_rads": v.cass_cad_rads,
            "reader_cad_rads": v.cass_cad_rads if v.agree else v.cad_rads,
            "cass_refer": v.cass_refer,
        }
        for v in verdicts
    ]
    table = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    if table.empty:
        return table
    table = table.drop_duplicates(["patient_id", "reader"], keep="last")
    table["week"] = table["at"].dt.strftime("%G-W%V")
    return table.reset_index(drop=True)


def agreement(table: pd.DataFrame) -> dict:
    """CASS against its readers: verdicts, share agreed, CAD-RADS linearly weighted kappa
    (over verdicts that give both categories), and referral sensitivity and specificity
    against the readers' categories (>= 3 is a referral)."""
    both = table.dropna(subset=["cass_cad_rads", "reader_cad_rads"])
    both = both[both.cass_cad_rads.isin(CATEGORIES) & both.reader_cad_rads.isin(CATEGORIES)]
    figures: dict = {
        "verdicts": len(table),
        "agreed": float(table.agree.mean()) if len(table) else None,
    }
    read, said = (both[c].map(CATEGORIES.index) for c in ("reader_cad_rads", "cass_cad_rads"))
    figures["kappa_linear"] = category_kappa(read, said)
    cut = CATEGORIES.index(AUC_CUTS["hold_out_auc"])  # 3 and above: a referral
    refer, said = read >= cut, said >= cut
    figures["referral_sensitivity"] = float(said[refer].mean()) if refer.any() else None
    figures["referral_specificity"] = float((~said[~refer]).mean()) if (~refer).any() else None
    return figures


AGREEMENT_SCHEMA = pa.schema(
    [
        ("week", pa.string()),
        ("verdicts", pa.int64()),
        ("agreed", pa.float64()),
        ("kappa_linear", pa.float64()),
        ("referral_sensitivity", pa.float64()),
        ("referral_specificity", pa.float64()),
    ]
)


def agreement_by_week(table: pd.DataFrame) -> pd.DataFrame:
    """`agreement` per ISO week of the verdicts, oldest first."""
    rows = [
        {"week": week, **agreement(part)}
        for week, part in (table.groupby("week", sort=True) if len(table) else [])
    ]
    return pd.DataFrame(rows, columns=AGREEMENT_SCHEMA.names)

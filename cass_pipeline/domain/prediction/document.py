"""`prediction.json`: one patient's prediction table as the document its reader gets.

Made from the prediction table alone, so a REST client builds the same document from the
service's answer. It holds no identifier: the patient is named by its pseudonym."""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pandas as pd

from cass_pipeline.domain.anatomy import GRADE_RANGE, GRADES, STENOSIS_CLASSES

#: Version 2: `cad_rads` is the CAD-RADS 2.0 category of a grade model (a range, as in version
#: 1, for a three-class model) and every level carries its `grade`.
SCHEMA = "cass-prediction/2"


Probabilities = dict[str, float]
#: One view's finding (`branches.<name>.views`).
ViewFinding = TypedDict(
    "ViewFinding",
    {
        "view_index": int | None,
        "source": str,
        "class": str,
        "probabilities": Probabilities | None,
        "grade": str | None,
        "grade_probabilities": Probabilities | None,
    },
)
#: What every level's finding states (a view's is `ViewFinding`).
Finding = TypedDict(
    "Finding",
    {
        "class": str,
        "probabilities": Probabilities | None,
        "grade": str | None,
        "grade_probabilities": Probabilities | None,
        "significant_score": float | None,
        "refer": bool | None,
        "views_used": int | None,
    },
)


class BranchFinding(Finding):
    """One branch's finding, its views and its rejected files (`branches.<name>`)."""

    artery: str
    votes: dict[str, int]
    grade_votes: dict[str, int] | None
    views: list[ViewFinding]
    views_rejected: list[dict[str, str]]


class ArteryFinding(Finding):
    """One artery's finding and the branch that decided it (`arteries.<name>`)."""

    decided_by: str


class PredictionDocument(TypedDict):
    """`prediction.json`, as every reader (picture, worklist, DICOM results, the inbox asset,
    `cass predict`) takes it: a key renamed here is renamed for all of them."""

    schema: str
    patient: str
    model: dict
    patient_class: str | None
    cad_rads: str | None
    cad_rads_from: str
    probabilities: Probabilities | None
    grade: str | None
    grade_probabilities: Probabilities | None
    significant_score: float | None
    refer: bool | None
    decided_by: str | None
    views_used: int | None
    note: str | None
    arteries: dict[str, ArteryFinding]
    branches: dict[str, BranchFinding]
    rejected: list[dict[str, str | None]]
    pixel_check: dict | None
    #: The inbox study it scored (a keyed id), where it came from the inbox.
    study: NotRequired[str]


def probabilities(row: dict, names: tuple[str, ...] = STENOSIS_CLASSES) -> dict[str, float] | None:
    """The row's probabilities of `names` (classes, or grades), None where absent."""
    values = {c: row.get(f"p_{c}") for c in names}
    if any(v is None or pd.isna(v) for v in values.values()):
        return None
    return {c: round(float(v), 6) for c, v in values.items()}


def graded(row: dict) -> dict:
    """The row's CAD-RADS grade and grade probabilities (None from a three-class model)."""
    return {"grade": text(row.get("grade")), "grade_probabilities": probabilities(row, GRADES)}


def number(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def text(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def triage(row: dict) -> dict:
    """The row's significance score and whether it is referred at the model's operating point."""
    score = row.get("significant_score")
    refer = row.get("refer")
    return {
        "significant_score": None if score is None or pd.isna(score) else round(float(score), 6),
        "refer": None if refer is None or pd.isna(refer) else bool(refer),
    }


def prediction_document(
    table: pd.DataFrame, model: dict, pixel_check: dict | None = None
) -> PredictionDocument:
    """The `prediction.json` of one patient's prediction table (docs/prediction.md), with
    what OCR read on the views the outputs show (`PixelText.to_json`) where known."""
    level = {name: rows for name, rows in table.groupby("level", sort=False)}
    empty = table.iloc[0:0]
    top = level["patient"].iloc[0].to_dict()
    views, rejected = level.get("view", empty), level.get("rejected", empty)
    branches = {}
    for row in level.get("branch", empty).to_dict("records"):
        own = views[views.branch == row["branch"]].sort_values("view_index")
        branches[row["branch"]] = {
            "artery": row["artery"],
            "class": row["stenosis_class"],
            "probabilities": probabilities(row),
            **graded(row),
            **triage(row),
            "views_used": number(row["views_used"]),
            "votes": {c: int((own.stenosis_class == c).sum()) for c in STENOSIS_CLASSES},
            "grade_votes": (
                {g: int((own.grade == g).sum()) for g in GRADES}
                if own.grade.notna().any()
                else None
            ),
            "views": [
                {
                    "view_index": number(view["view_index"]),
                    "source": view["source"],
                    "class": view["stenosis_class"],
                    "probabilities": probabilities(view),
                    **graded(view),
                }
                for view in own.to_dict("records")
            ],
            "views_rejected": [
                {"source": r["source"], "reason": r["reason"]}
                for r in rejected[rejected.branch == row["branch"]].to_dict("records")
            ],
        }
    arteries = {
        row["artery"]: {
            "class": row["stenosis_class"],
            "probabilities": probabilities(row),
            **graded(row),
            **triage(row),
            "decided_by": row["decided_by"],
            "views_used": number(row["views_used"]),
        }
        for row in level.get("artery", empty).to_dict("records")
    }
    return {
        "schema": SCHEMA,
        "patient": str(top["patient"]),
        "model": model,
        "patient_class": text(top["stenosis_class"]),
        "cad_rads": text(top["cad_rads"]),
        "cad_rads_from": "branch grades" if text(top.get("grade")) else "patient class (a range)",
        "probabilities": probabilities(top),
        **graded(top),
        **triage(top),
        "decided_by": text(top["decided_by"]),
        "views_used": number(top["views_used"]),
        "note": text(top["reason"]),
        "arteries": arteries,
        "branches": branches,
        "rejected": [
            {"source": r["source"], "branch": text(r["branch"]), "reason": r["reason"]}
            for r in rejected.to_dict("records")
        ],
        "pixel_check": pixel_check,
    }


def referral_line(document: PredictionDocument) -> str:
    """Whether the patient is referred, on which score and at which operating point."""
    if document["refer"] is None:
        return "Triage: no decision (no view could be scored)"
    model = document["model"]
    threshold = model.get("referral_threshold")
    rule = (
        f"refer at a significant class or P >= {threshold:.3f}, set on validation for patient "
        f"sensitivity >= {model.get('target_sensitivity', 0.95):.2f}"
        if threshold is not None
        else "refer at a significant class (no threshold was needed or fitted)"
    )
    verdict = "REFER" if document["refer"] else "routine"
    return f"Triage: {verdict} (P(significant) {document['significant_score']:.2f}; {rule})"


def grade_text(grade: str | None) -> str:
    """A grade as a report writes it: "moderate 50-69%", "" for a three-class model."""
    if grade is None:
        return ""
    low, high = GRADE_RANGE[grade]
    return f"{grade} {low}%" if low == high else f"{grade} {low}-{high}%"


def summary_lines(document: PredictionDocument) -> list[str]:
    """The header: the patient's class first, then the model, the arteries and the rejects."""
    model = document["model"]
    if document["patient_class"] is None:
        first = f"Patient {document['patient']}: no prediction ({document['note']})"
    else:
        first = (
            f"Patient {document['patient']}: {document['patient_class'].replace('_', ' ')} "
            f"(CAD-RADS {document['cad_rads']}), decided by {document['decided_by']}"
        )
    arteries = "   ".join(
        f"{name}: {grade_text(a['grade']) or a['class'].replace('_', ' ')} "
        f"(p {a['probabilities'][a['class']]:.2f}, {a['decided_by']})"
        for name, a in document["arteries"].items()
    )
    return [
        first,
        referral_line(document),
        f"Model {model.get('name')} version {model.get('version')}"
        + (f" @{model['alias']}" if model.get("alias") else "")
        + f", {model.get('engine')}, cleanup {model.get('cleanup_fingerprint')}",
        arteries or "no artery could be scored",
        f"{document['views_used'] or 0} views used, {len(document['rejected'])} rejected "
        "(reasons in prediction.json). A second opinion, not a diagnosis.",
    ]


def terminal_lines(document: PredictionDocument, name: str, version) -> list[str]:
    """What `cass predict` prints: the patient, the triage, a line per branch, the rejects."""
    lines = [
        f"patient {document['patient']}: {document['patient_class']} "
        f"(CAD-RADS {document['cad_rads']}), model {name} version {version}",
        referral_line(document),
    ]
    for branch_name, branch in document["branches"].items():
        p = branch["probabilities"]
        lines.append(
            f"  {branch_name:<8} {branch['class']:<16} {grade_text(branch['grade']):<17}"
            + " ".join(f"{p[c]:.2f}" for c in p)
            + f"  ({branch['views_used']} views)"
        )
    if document["rejected"]:
        lines.append(f"  {len(document['rejected'])} files rejected (reasons in prediction.json)")
    return lines

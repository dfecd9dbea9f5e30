"""View classes and grades up to branch, artery and patient (`ROLLUP_RULES`), with the CAD-RADS
category and the triage decision: one prediction table for every level."""

from __future__ import annotations

import pandas as pd

from cass_pipeline.domain.anatomy import CAD_RADS_OF_CLASS, GRADES, category_of_grades
from cass_pipeline.domain.model.calibration import PROBABILITY_COLUMNS
from cass_pipeline.domain.model.metrics import majority_vote
from cass_pipeline.domain.model.targets import GRADE_PROBABILITY_COLUMNS
from cass_pipeline.domain.prediction.bundle import ModelBundle

#: One table for every level; `level` is patient, artery, branch, view or rejected.
PREDICTION_COLUMNS = [
    "patient",
    "level",
    "artery",
    "branch",
    "view_index",
    "source",
    "stenosis_class",
    "grade",
    *PROBABILITY_COLUMNS,
    *GRADE_PROBABILITY_COLUMNS,
    "significant_score",
    "refer",
    "views_used",
    "decided_by",
    "cad_rads",
    "reason",
]


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in PREDICTION_COLUMNS})


def decisive(rows: pd.DataFrame, bundle: ModelBundle) -> pd.Series:
    """The most severe row (by grade for grade models, else by class), ties going to the
    higher probability of that grade or class."""
    named = "grade" if bundle.outputs.grades else "stenosis_class"
    severity = rows[named].map(bundle.outputs.names.index)
    worst = rows[severity == severity.max()]
    column = f"p_{worst[named].iloc[0]}"
    return worst.loc[worst[column].idxmax()]


def most_severe(level: str, rows: pd.DataFrame, part: str, bundle: ModelBundle) -> dict:
    """A `level` row taking class, grade and probabilities from the most severe of its
    `rows`, and the highest significance score among them."""
    worst = decisive(rows, bundle)
    return {
        "level": level,
        "stenosis_class": worst.stenosis_class,
        "grade": worst.grade,
        **worst[[*PROBABILITY_COLUMNS, *GRADE_PROBABILITY_COLUMNS]].to_dict(),
        "significant_score": float(rows.significant_score.max()),
        "views_used": int(rows.views_used.sum()),
        "decided_by": worst[part],
    }


def with_referral(rows: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    """`rows` with `refer`: the calibration's decision on each row's significance score."""
    refer = [
        bundle.calibration.refers(score, bundle.classes.index(name))
        for score, name in zip(rows.significant_score, rows.stenosis_class, strict=True)
    ]
    return rows.assign(refer=refer)


def patient_category(branches: pd.DataFrame, top: dict, bundle: ModelBundle) -> str:
    """The patient's CAD-RADS 2.0 category from the branch grades; a three-class model gives
    the range of categories of the patient's class ("3-5")."""
    if not bundle.outputs.grades:
        return CAD_RADS_OF_CLASS[top["stenosis_class"]]
    grades = dict(zip(branches.branch, branches.grade.map(GRADES.index), strict=True))
    return category_of_grades(grades)


def roll_up(
    patient: str,
    views: pd.DataFrame,
    rejects: list[dict],
    bundle: ModelBundle,
    branch_outputs: dict[str, int] | None = None,
) -> pd.DataFrame:
    """View rows to branch, artery and patient rows (`ROLLUP_RULES`), plus the rejects; a
    branch's output (grade or class) is `branch_outputs[branch]` (the model's aggregation)
    where given, else the vote of its views."""
    if views.empty:
        no_view = {"level": "patient", "reason": "no view could be used", "views_used": 0}
        parts = [pd.DataFrame([no_view])]
    else:
        ungraded = {c: None for c in ["grade", *GRADE_PROBABILITY_COLUMNS] if c not in views}
        views = views.assign(**ungraded)  # view rows of a three-class model may lack them
        branches = branch_rows(views, bundle, branch_outputs)
        arteries = pd.DataFrame(
            [
                {"artery": artery, **most_severe("artery", group, "branch", bundle)}
                for artery, group in branches.groupby("artery", sort=True)
            ]
        )
        top = most_severe("patient", arteries, "artery", bundle)
        top["cad_rads"] = patient_category(branches, top, bundle)
        views = views.assign(level="view", artery=views.branch.map(bundle.artery_of_branch))
        parts = [
            *(with_referral(rows, bundle) for rows in (pd.DataFrame([top]), arteries, branches)),
            views,
        ]
    if rejects:
        parts.append(reject_rows(rejects, bundle))
    table = pd.concat([empty_table(), *parts], ignore_index=True)
    table["patient"] = patient
    return table[PREDICTION_COLUMNS].astype(
        {c: float for c in [*PROBABILITY_COLUMNS, *GRADE_PROBABILITY_COLUMNS, "significant_score"]}
    )


def branch_rows(
    views: pd.DataFrame, bundle: ModelBundle, branch_outputs: dict[str, int] | None
) -> pd.DataFrame:
    """One row per branch in reporting order: its class and grade (decided, else voted),
    the mean of its views' probabilities, its significance score and artery."""
    outputs = bundle.outputs
    named = "grade" if outputs.grades else "stenosis_class"
    rows = []
    for branch, group in views.groupby("branch", sort=True):
        if branch_outputs is not None:
            decided = branch_outputs[branch]
        else:
            decided = majority_vote(group[named].map(outputs.names.index))
        rows.append(
            {
                "level": "branch",
                "branch": branch,
                "stenosis_class": bundle.classes[int(outputs.classes_of(decided))],
                "grade": outputs.names[decided] if outputs.grades else None,
                **group[[*PROBABILITY_COLUMNS, *GRADE_PROBABILITY_COLUMNS]].mean().to_dict(),
                "significant_score": float(group.p_significant.mean()),
                "views_used": len(group),
            }
        )
    order = list(bundle.artery_of_branch)
    branches = pd.DataFrame(rows).sort_values("branch", key=lambda b: b.map(order.index))
    return branches.assign(artery=branches.branch.map(bundle.artery_of_branch))


def reject_rows(rejects: list[dict], bundle: ModelBundle) -> pd.DataFrame:
    """The files and views that could not be used, each with its reason."""
    return pd.DataFrame(
        [
            {
                "level": "rejected",
                "branch": r["branch"],
                "artery": bundle.artery_of_branch.get(r["branch"]),
                "source": r["source_path"],
                "reason": r["reason"],
            }
            for r in rejects
        ]
    )

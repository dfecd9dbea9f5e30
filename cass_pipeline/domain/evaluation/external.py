"""External validation: another site's export scored as CASS serves it (raw files through the
`Predictor`, the site's own cleanup problems included), labelled from that site's reports,
and its figures set beside the internal test figures (van Herten et al. report CAD-RADS
kappa 0.75 internal, 0.71 at another hospital)."""

from __future__ import annotations

import pandas as pd

from cass_pipeline.domain.anatomy import GRADES, STENOSIS_CLASSES
from cass_pipeline.domain.model.data import branch_targets

#: The figures compared, by the name the internal evaluation logs them under.
COMPARED = {
    "segment weighted F1": "test_segment_f1_weighted",
    "artery weighted F1": "test_artery_f1_weighted",
    "patient weighted F1": "test_patient_f1_weighted",
    "CAD-RADS kappa (linear)": "test_cad_rads_kappa_linear",
    "CAD-RADS accuracy": "test_cad_rads_accuracy",
    "hold-out AUC": "test_hold_out_auc",
    "referral sensitivity": "test_referral_sensitivity",
}
#: The largest kappa drop from internal to external that the goal allows (issue 38).
KAPPA_DROP_ALLOWED = 0.05


def site_labels(branch_labels: pd.DataFrame, patient_labels: pd.DataFrame) -> pd.DataFrame:
    """The labelled branches (`branch_targets`) of the patients not held for review."""
    kept = patient_labels.loc[~patient_labels.held_for_review.astype(bool), "patient_id"]
    return branch_targets(branch_labels[branch_labels.patient_id.isin(kept)])


def served_views(table: pd.DataFrame, patient: str, labels: pd.DataFrame) -> pd.DataFrame:
    """One patient's prediction table (`roll_up`) as labelled view predictions (the columns
    of the internal test predictions): each view with its branch's served decision; views of
    unlabelled branches left out."""
    views = table[table.level == "view"]
    branches = table[table.level == "branch"].set_index("branch")
    own = labels[labels.patient_id == patient]
    if views.empty or own.empty:
        return pd.DataFrame()
    rows = views.merge(own, on="branch", how="inner")
    graded = rows.grade.notna().all()
    decided = branches.reindex(rows.branch)
    return rows.assign(
        patient_id=patient,
        view_index=rows.view_index.astype(int),
        pred=rows.stenosis_class.map(STENOSIS_CLASSES.index),
        branch_pred=decided.stenosis_class.map(STENOSIS_CLASSES.index).to_numpy(),
        grade_pred=rows.grade.map(GRADES.index) if graded else pd.NA,
        branch_grade=decided.grade.map(GRADES.index).to_numpy() if graded else pd.NA,
    )


def side_by_side(internal: dict[str, float | None], external: dict[str, float | None]) -> str:
    """The compared figures as Markdown: internal test, external site, the difference."""

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["| figure | internal test | external site | change |", "|---|---|---|---|"]
    for name in COMPARED:
        inside, outside = internal.get(name), external.get(name)
        change = "-" if inside is None or outside is None else f"{outside - inside:+.3f}"
        lines.append(f"| {name} | {shown(inside)} | {shown(outside)} | {change} |")
    return "\n".join(lines)


def kappa_drop(internal: dict, external: dict) -> float | None:
    """How far the CAD-RADS kappa falls from internal to external (None without grades)."""
    name = "CAD-RADS kappa (linear)"
    if internal.get(name) is None or external.get(name) is None:
        return None
    return internal[name] - external[name]

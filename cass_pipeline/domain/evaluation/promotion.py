"""The promotion rule: when a challenger takes the champion's place, and when it may not.

Promote when there is no champion, or when the challenger's patient-level weighted F1 is at
least the champion's (a tie promotes: the newer model learnt from the newer data) on test
patients neither model learnt from. Keep a challenger that already is the champion. Refuse
(a blocking check) a promotion that refers fewer significant patients than the champion does.
"""

from __future__ import annotations

import pandas as pd

from cass_pipeline.domain.model.calibration import Calibration, patient_referrals, referral_rates
from cass_pipeline.domain.model.metrics import evaluate

#: Fewer test patients than this that neither model learnt from: no fair comparison.
MIN_FAIR_TEST_PATIENTS = 5


def significant_sensitivity(predictions: pd.DataFrame, calibration: Calibration) -> float:
    """Share of significant patients referred at the model's operating point."""
    return referral_rates(patient_referrals(predictions, calibration))["sensitivity"] or 0.0


def patient_f1(predictions: pd.DataFrame) -> float:
    return evaluate(predictions, bootstrap=0)["patient"]["f1_weighted"]


def challenger_entry(report: dict) -> dict:
    """The challenger's side of the decision, from its evaluation report."""
    return {
        "challenger_version": report["model_version"],
        "challenger_patient_f1": report["metrics"]["patient"]["f1_weighted"],
        "challenger_significant_sensitivity": report["calibration_test"]["sensitivity"] or 0.0,
    }


def without_comparison(challenger_version: int, champion_version: int | None) -> dict | None:
    """The decision when no comparison is needed: no champion yet (promote), or the
    challenger already is the champion (keep); else None."""
    if champion_version is None:
        return {"champion_version": None, "promote": True, "reason": "no champion yet"}
    if champion_version == challenger_version:
        return {
            "champion_version": champion_version,
            "promote": False,
            "reason": "the challenger is already the champion",
        }
    return None


def unseen_patients(
    views: pd.DataFrame, images_learnt: set[str], patients_learnt: set[str]
) -> tuple[pd.DataFrame, set[str]]:
    """The test views of patients the champion never learnt from (by the content of their
    images, else by pseudonym), and the patients it did learn from."""
    learnt = set(views.loc[views.source_sha256.str[:16].isin(images_learnt), "patient_id"])
    learnt |= set(views.patient_id) & patients_learnt
    return views[~views.patient_id.isin(learnt)], learnt


def too_few_to_compare(learnt: set[str], patients_left: int) -> str | None:
    """Why no fair comparison is possible, or None."""
    if learnt and patients_left < MIN_FAIR_TEST_PATIENTS:
        return (
            f"the champion learnt from {len(learnt)} of the test patients (the splits changed "
            f"since); {patients_left} left, too few to compare fairly"
        )
    return None


def compare(challenger_f1: float, champion_f1: float, where: str) -> dict:
    """Promote when the challenger's patient F1 is at least the champion's (a tie promotes)."""
    return {
        "champion_patient_f1": champion_f1,
        "promote": challenger_f1 >= champion_f1,
        "reason": f"patient-level weighted F1 {challenger_f1:.3f} vs champion {champion_f1:.3f} "
        + where,
    }


def refused_on_sensitivity(decision: dict) -> bool:
    """A promotion that refers fewer significant patients than the champion does: refused."""
    champion = decision.get("champion_significant_sensitivity")
    return bool(
        decision["promote"]
        and champion is not None
        and decision["challenger_significant_sensitivity"] < champion
    )

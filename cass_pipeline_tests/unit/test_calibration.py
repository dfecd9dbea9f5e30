"""Temperature scaling, calibration error and the referral operating point."""

import numpy as np
import pandas as pd
import pytest

from cass_pipeline.domain.model.calibration import (
    Calibration,
    calibrate,
    calibration_report,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    patient_referrals,
    patient_significance,
    referral_rates,
    referral_threshold,
)
from cass_pipeline.domain.model.inference import predict_probabilities
from cass_pipeline.domain.model.targets import OUTPUT_SPACES

CLASSES, GRADES = OUTPUT_SPACES["class"], OUTPUT_SPACES["grade"]


def overconfident(n=3000, seed=0):
    """Views whose true class follows p, reported as p sharpened by T = 3 (overconfident)."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet([1.0, 1.0, 1.0], n)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    return calibrate(truth, 1 / 3), labels


def test_temperature_scaling_recovers_the_sharpening_and_cuts_the_error():
    reported, labels = overconfident()
    temperature = fit_temperature(reported, np.eye(3, dtype=bool)[labels])
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(reported, labels)
    after = expected_calibration_error(calibrate(reported, temperature), labels)
    assert before > 0.1 and after < 0.03


def test_temperature_keeps_every_predicted_class():
    reported, _ = overconfident(500)
    assert (calibrate(reported, 2.7).argmax(1) == reported.argmax(1)).all()
    np.testing.assert_allclose(calibrate(calibrate(reported, 2.7), 1 / 2.7), reported, atol=1e-9)


def test_perfectly_calibrated_predictions_have_no_error():
    probabilities = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    assert expected_calibration_error(probabilities, [0, 1, 2]) == 0.0
    assert expected_calibration_error(probabilities, [1, 2, 0]) == 1.0


def test_threshold_refers_at_least_the_target_share_of_significant_patients():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    significant = np.array([True, True, True, False, False, False])
    nobody = np.zeros(6, bool)
    assert referral_threshold(scores, significant, nobody, 0.95) == 0.3  # all three
    assert referral_threshold(scores, significant, nobody, 0.6) == 0.8  # two of three
    assert referral_threshold(scores, np.ones(6, bool), nobody, 0.95) == 0.1
    assert referral_threshold(scores, nobody, nobody) is None


def test_the_threshold_only_has_to_catch_what_the_class_misses():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    significant = np.array([True, True, True, False, False, False])
    first_two = np.array([True, True, False, False, False, False])
    assert referral_threshold(scores, significant, first_two, 0.95) == 0.3
    assert referral_threshold(scores, significant, first_two, 0.6) is None  # class suffices
    all_three = np.array([True, True, True, False, False, False])
    assert referral_threshold(scores, significant, all_three, 0.95) is None


def test_referral_rates_at_the_threshold():
    patients = pd.DataFrame(
        {"score": [0.9, 0.8, 0.3, 0.7, 0.2, 0.1], "significant": [True] * 3 + [False] * 3}
    )
    rates = referral_rates(patients.assign(refer=patients.score >= 0.3))
    assert rates["sensitivity"] == 1.0
    assert rates["specificity"] == pytest.approx(2 / 3)
    assert rates["roc_auc"] == pytest.approx(8 / 9)
    nobody = referral_rates(patients[~patients.significant].assign(refer=False))
    assert nobody["sensitivity"] is None and nobody["roc_auc"] is None


def scored_views(p_significant, preds, labels):
    """One branch of two views per patient."""
    rows = []
    for i, (p, pred, label) in enumerate(zip(p_significant, preds, labels, strict=True)):
        for view in range(2):
            rest = (1 - p) / 2
            rows.append((f"P{i}", "LAD", view, label, pred, rest, rest, p))
    return pd.DataFrame(
        rows,
        columns=[
            "patient_id",
            "branch",
            "view_index",
            "label",
            "pred",
            "p_no_stenosis",
            "p_non_significant",
            "p_significant",
        ],
    )


def test_a_patient_under_the_threshold_is_referred_by_score_not_by_class():
    views = scored_views([0.4, 0.35, 0.1], preds=[1, 1, 0], labels=[2, 1, 0])
    at_threshold = patient_referrals(views, Calibration(referral_threshold=0.4))
    assert at_threshold.refer.tolist() == [True, False, False]
    by_class = patient_referrals(views, Calibration())
    assert by_class.refer.tolist() == [False, False, False]
    report = calibration_report(views, Calibration(referral_threshold=0.3), CLASSES)
    assert (report["sensitivity"], report["specificity"]) == (1.0, 0.5)
    assert report["ece_before"] == pytest.approx(report["ece_after"])  # T = 1


def test_patient_score_is_the_worst_branch_mean():
    views = pd.DataFrame(
        {
            "patient_id": ["a"] * 4 + ["b"] * 2,
            "branch": ["LAD", "LAD", "RCA", "RCA", "LAD", "LAD"],
            "label": [2, 2, 0, 0, 1, 1],
            "p_significant": [0.2, 0.6, 0.5, 0.5, 0.1, 0.3],
        }
    )
    patients = patient_significance(views).set_index("patient_id")
    assert patients.score.to_dict() == pytest.approx({"a": 0.5, "b": 0.2})
    assert patients.significant.to_dict() == {"a": True, "b": False}


def test_fitted_calibration_travels_as_json_and_refers_by_class_or_threshold():
    reported, labels = overconfident(600)
    views = pd.DataFrame(
        {
            "patient_id": [f"P{i // 20}" for i in range(600)],
            "branch": [["LAD", "LCX", "RCA", "LM"][i // 5 % 4] for i in range(600)],
            "label": labels,
        }
    )
    fitted = fit_calibration(views, reported, CLASSES)
    assert fitted.temperature > 1.5
    assert fitted.validation["sensitivity"] >= 0.95
    assert fitted.validation["ece_after"] < fitted.validation["ece_before"]
    assert Calibration.from_json(fitted.to_json()) == fitted
    triage = Calibration(referral_threshold=0.4)
    assert triage.refers(0.4, 0) and not triage.refers(0.4 - 1e-6, 1)
    assert triage.refers(0.0, 2)  # a significant class is always referred


class FixedLogits:
    name = "fixed"

    def __init__(self, logits):
        self.values = np.asarray(logits, np.float32)

    def logits(self, images):
        return self.values[: len(images)]

    def outputs(self, images):
        return self.logits(images), np.zeros((len(images), 4), np.float32)


def test_a_scaled_engine_serves_the_calibrated_probabilities():
    engine = FixedLogits([[2.0, 0.5, -1.0], [-0.3, 0.1, 3.0]])
    raw = predict_probabilities(engine, np.zeros((2, 4, 4), np.uint8))
    fitted = Calibration(temperature=2.5)
    served = predict_probabilities(fitted.scaled(engine), np.zeros((2, 4, 4), np.uint8))
    np.testing.assert_allclose(served, calibrate(raw, 2.5), atol=1e-6)
    np.testing.assert_allclose(fitted.uncalibrated(served), raw, atol=1e-5)
    assert fitted.scaled(engine).name == "fixed"


def test_a_bundle_without_calibration_changes_nothing_and_refers_by_class():
    legacy = Calibration.from_json(None)
    engine = FixedLogits([[2.0, 0.5, -1.0]])
    assert legacy.scaled(engine) is engine
    assert legacy.refers(0.99, 1) is False and legacy.refers(0.01, 2) is True


def test_the_threshold_is_fitted_on_the_branch_decisions_the_model_will_make():
    views = scored_views([0.3, 0.2, 0.1], preds=[0, 0, 0], labels=[2, 0, 0])
    raw = views[["p_no_stenosis", "p_non_significant", "p_significant"]].to_numpy()
    by_vote = fit_calibration(views.drop(columns="pred"), raw, CLASSES)
    assert by_vote.referral_threshold is not None  # the vote misses the significant patient
    head_says_significant = views.drop(columns="pred").assign(branch_pred=[2, 2, 0, 0, 0, 0])
    assert fit_calibration(head_says_significant, raw, CLASSES).referral_threshold is None


def test_a_grade_temperature_is_fitted_on_the_likelihood_of_the_allowed_grades():
    rng = np.random.default_rng(0)
    truth = rng.dirichlet([1.0] * 6, 3000)
    grades = np.array([rng.choice(6, p=p) for p in truth])
    low = np.where(grades == 2, 1, grades)  # every mild label reads "<50%": minimal-mild
    intervals = pd.DataFrame({"grade_low": low, "grade_high": grades})
    reported = calibrate(truth, 1 / 3)
    assert fit_temperature(reported, GRADES.allowed(intervals)) == pytest.approx(3.0, rel=0.2)

"""Calibration and the triage operating point, both fitted on the validation split.

Temperature scaling divides the log-probabilities of every view's outputs (classes or grades)
by one fitted temperature (classes and votes stay as they are). A patient's significance
score is the highest mean P(significant) of their branches. A patient is referred when
their predicted class is significant, or their score reaches the referral threshold: the
highest threshold with which at least the target share of significant validation patients
is referred.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.model.inference import Engine, TemperatureScaled
from cass_pipeline.domain.model.metrics import (
    artery_level,
    branch_level,
    patient_cad_rads,
    patient_level,
)
from cass_pipeline.domain.model.targets import OutputSpace, interval_nll

SIGNIFICANT = 2
#: The probability columns of every prediction table, in class order.
PROBABILITY_COLUMNS = [f"p_{name}" for name in STENOSIS_CLASSES]
#: Patient-level sensitivity for the significant class that the operating point must keep.
TARGET_SENSITIVITY = 0.95
#: Bins of the expected calibration error and of the reliability diagram.
CALIBRATION_BINS = 10
#: Temperatures outside this range mean the fit went wrong, not that the model is that far off.
TEMPERATURE_RANGE = (0.05, 20.0)


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row (T = 1 leaves the probabilities as they are)."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-30, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, allowed: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the `allowed` outputs (N, K;
    one per row for a class label, an interval of grades for a grade label)."""

    def nll(log_t: float) -> float:
        return float(interval_nll(calibrate(probabilities, math.exp(log_t)), allowed).mean())

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    return float(math.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS):
    """Per confidence bin (top-class probability): count, mean confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels, int)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return pd.DataFrame(
        {
            "bin_low": np.arange(bins) / bins,
            "count": np.bincount(which, minlength=bins),
            "confidence": [
                confidence[which == b].mean() if (which == b).any() else np.nan for b in range(bins)
            ],
            "accuracy": [
                correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)
            ],
        }
    )


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by their counts."""
    table = reliability(probabilities, labels, bins).dropna()
    gaps = (table.accuracy - table.confidence).abs()
    return float((gaps * table["count"]).sum() / max(1, table["count"].sum()))


def patient_significance(views: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: `score` (highest branch mean of p_significant) and `significant`
    (the patient's label is significant), from views with patient_id, branch, label and
    p_significant."""
    branches = views.groupby(["patient_id", "branch"], sort=True).agg(
        p=("p_significant", "mean"), label=("label", "max")
    )
    patients = branches.groupby(level="patient_id").agg(score=("p", "max"), label=("label", "max"))
    return pd.DataFrame(
        {"score": patients.score, "significant": patients.label == SIGNIFICANT}
    ).reset_index()


def referral_threshold(
    scores: np.ndarray,
    significant: np.ndarray,
    by_class: np.ndarray,
    target: float = TARGET_SENSITIVITY,
) -> float | None:
    """The highest threshold with which "significant class, or score >= threshold" refers at
    least `target` of the significant patients (`by_class`: those whose predicted class is
    significant); None when the class alone does, or there is no significant patient."""
    significant = np.asarray(significant, bool)
    missed = np.sort(np.asarray(scores, float)[significant & ~np.asarray(by_class, bool)])[::-1]
    needed = math.ceil(target * significant.sum() - 1e-9) - (significant.sum() - missed.size)
    return float(missed[needed - 1]) if needed > 0 else None


def referral_rates(patients: pd.DataFrame) -> dict:
    """Sensitivity and specificity of `refer` for significant patients, and the ROC AUC of
    the ranking by score; rates are None where a class is absent."""
    positive, negative = patients.significant.astype(bool), ~patients.significant.astype(bool)
    refer = patients.refer.astype(bool)
    both = positive.any() and negative.any()
    return {
        "patients": len(patients),
        "significant_patients": int(positive.sum()),
        "sensitivity": float(refer[positive].mean()) if positive.any() else None,
        "specificity": float((~refer[negative]).mean()) if negative.any() else None,
        "roc_auc": float(roc_auc_score(positive, patients.score)) if both else None,
    }


#: Fewer validation patients than this fit a temperature and a threshold that may be far off
#: (the demo's validation split has 6): the calibration is then flagged, not trusted.
MIN_CALIBRATION_PATIENTS = 30


def calibration_doubt(patients: int, significant: int) -> str:
    """Why a calibration fitted on `patients` (of which `significant`) is not to be trusted,
    or '' when it is."""
    if patients < MIN_CALIBRATION_PATIENTS:
        return (
            f"fitted on {patients} validation patients, fewer than "
            f"{MIN_CALIBRATION_PATIENTS}: the temperature and the referral threshold may be far off"
        )
    if significant == 0:
        return "no significant patient in the validation split: the referral threshold is a guess"
    return ""


@dataclass(frozen=True)
class Calibration:
    """What a model carries to turn its outputs into calibrated triage: the temperature and
    the referral threshold, with what they were fitted on."""

    temperature: float = 1.0
    referral_threshold: float | None = None
    target_sensitivity: float = TARGET_SENSITIVITY
    fitted_on: str = "not fitted"
    validation: dict | None = None
    #: Why the temperature and threshold are not to be trusted ('' when they are): fitted
    #: on fewer than `MIN_CALIBRATION_PATIENTS` patients, or on no significant one.
    unreliable: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> Calibration:
        """A bundle's calibration; bundles written before calibration existed get T = 1 and
        no threshold (referral then follows the predicted class)."""
        return cls(**data) if data else cls()

    def scaled(self, engine: Engine) -> Engine:
        """`engine` giving calibrated probabilities (itself when T = 1)."""
        return engine if self.temperature == 1.0 else TemperatureScaled(engine, self.temperature)

    def uncalibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """The network's own probabilities back from calibrated ones."""
        return calibrate(probabilities, 1 / self.temperature)

    def refers(self, score: float, predicted_class: int) -> bool:
        """Refer a significant class, and any score at or above the threshold: the threshold
        only adds referrals, so it never refers fewer than the class does."""
        if predicted_class == SIGNIFICANT:
            return True
        return self.referral_threshold is not None and score >= self.referral_threshold


def patient_referrals(views: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """`patient_significance` of calibrated views (with pred) and each patient's `refer`."""
    patients = patient_significance(views)
    predicted = patient_level(artery_level(branch_level(views))).set_index("patient_id").pred
    patients["refer"] = [
        calibration.refers(score, int(predicted[patient]))
        for patient, score in zip(patients.patient_id, patients.score, strict=True)
    ]
    return patients


def patient_ranking(views: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """`patient_referrals` as a worklist: highest significance score first, with its rank and
    predicted CAD-RADS category."""
    patients = patient_referrals(views, calibration)
    patients["cad_rads"] = patients.patient_id.map(patient_cad_rads(views))
    ranked = patients.sort_values(
        ["score", "patient_id"], ascending=[False, True], ignore_index=True
    )
    return ranked.assign(rank=range(1, len(ranked) + 1))


def calibration_report(views: pd.DataFrame, calibration: Calibration, outputs: OutputSpace) -> dict:
    """How a model's calibration and operating point hold on labelled views scored with its
    calibrated probabilities (of `outputs`, and of the classes): class calibration error
    before and after (with the reliability tables) and the referral rates and ROC AUC over
    patients."""
    scaled = views[outputs.probability_columns].to_numpy(np.float64)
    calibrated = outputs.class_probabilities(scaled)
    labels = views.label.to_numpy(int)
    raw = outputs.class_probabilities(calibration.uncalibrated(scaled))
    return {
        "ece_before": expected_calibration_error(raw, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "reliability_before": reliability(raw, labels).to_dict("list"),
        "reliability_after": reliability(calibrated, labels).to_dict("list"),
        **referral_rates(patient_referrals(views, calibration)),
    }


def fit_calibration(
    views: pd.DataFrame, probabilities: np.ndarray, outputs: OutputSpace
) -> Calibration:
    """Temperature and referral threshold from validation views (patient_id, branch, label,
    grades; `branch_pred`, the class of their branch as the model decides it) and their
    uncalibrated probabilities of `outputs`; with the validation figures before and after."""
    temperature = fit_temperature(probabilities, outputs.allowed(views))
    scaled = calibrate(probabilities, temperature)
    columns = dict(zip(outputs.probability_columns, scaled.T, strict=True))
    columns |= dict(zip(PROBABILITY_COLUMNS, outputs.class_probabilities(scaled).T, strict=True))
    calibrated = views.assign(pred=outputs.classes_of(probabilities.argmax(1)), **columns)
    patients = patient_referrals(calibrated, Calibration())  # refer = by class
    threshold = referral_threshold(
        patients.score.to_numpy(), patients.significant.to_numpy(), patients.refer.to_numpy()
    )
    unchecked = Calibration(temperature, threshold)
    report = calibration_report(calibrated, unchecked, outputs)
    return replace(
        unchecked,
        fitted_on=f"validation split: {len(views)} views, {len(patients)} patients",
        unreliable=calibration_doubt(len(patients), int(patients.significant.sum())),
        validation={
            k: report[k]
            for k in (
                "ece_before",
                "ece_after",
                "patients",
                "significant_patients",
                "sensitivity",
                "specificity",
                "roc_auc",
            )
        },
    )

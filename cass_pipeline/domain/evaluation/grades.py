"""CAD-RADS figures of a grade model on labelled test views, beside the three-class table.

Branch: grade accuracy (the predicted grade inside the report's interval) and mean absolute
grade error (grades outside the interval). Patient: the CAD-RADS 2.0 category of the branch
grades against the report's (its branches read at their lowest allowed grade, as the report
parser reads a range), the confusion matrix, linearly weighted kappa, rule-out AUC (0 against
1-5, scored by the highest branch P(any stenosis)) and hold-out AUC (0-2 against 3-5, scored
by the highest branch P(>= 50%)), with 95% bootstrap intervals over patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from cass_pipeline.domain.anatomy import CATEGORIES, category_of_grades
from cass_pipeline.domain.model.metrics import PAPER_NOTE

#: Categories at or above which a patient counts as positive, per AUC.
AUC_CUTS = {"rule_out_auc": "1", "hold_out_auc": "3"}
#: Published image-based CAD-RADS figures (shared/reference/domain.md).
PUBLISHED = {
    "Denzinger et al. (2,867 patients)": {"rule_out_auc": 0.94, "hold_out_auc": 0.95},
    "van Herten et al. (internal / external)": {"kappa_linear": "0.75 / 0.71"},
    "Gerbasi et al., DeepCADRADS (0-3 vs 4-5)": {"auc": 0.87},
}


def grade_error(grade: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Grades between a prediction and the interval it should fall in (0 inside)."""
    return np.maximum(low - grade, 0) + np.maximum(grade - high, 0)


def graded_branches(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per (patient, branch): its label interval, the model's grade, and the mean
    P(any stenosis) and P(>= 50%) of its views."""
    views = predictions.assign(
        p_any=1.0 - predictions.p_none,
        p_obstructive=predictions[["p_moderate", "p_severe", "p_occluded"]].sum(axis=1),
    )
    grouped = views.groupby(["patient_id", "branch"], sort=True)
    return grouped.agg(
        grade_low=("grade_low", "first"),
        grade_high=("grade_high", "first"),
        grade=("branch_grade", "first"),
        p_any=("p_any", "mean"),
        p_obstructive=("p_obstructive", "mean"),
    ).reset_index()


def patient_categories(branches: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: the report's and the model's category (indices into
    `CATEGORIES`) and the two AUC scores."""
    rows = []
    for patient, own in branches.groupby("patient_id", sort=True):
        truth = category_of_grades(dict(zip(own.branch, own.grade_low.astype(int), strict=True)))
        predicted = category_of_grades(dict(zip(own.branch, own.grade.astype(int), strict=True)))
        rows.append(
            {
                "patient_id": patient,
                "truth": CATEGORIES.index(truth),
                "predicted": CATEGORIES.index(predicted),
                "rule_out_auc": float(own.p_any.max()),
                "hold_out_auc": float(own.p_obstructive.max()),
            }
        )
    return pd.DataFrame(rows)


def category_kappa(truth, predicted) -> float | None:
    """Linearly weighted kappa of CAD-RADS categories given as indices into `CATEGORIES`
    (None while fewer than two categories occur)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if len(set(truth) | set(predicted)) < 2:
        return None
    labels = list(range(len(CATEGORIES)))
    return float(cohen_kappa_score(truth, predicted, weights="linear", labels=labels))


def patient_figures(patients: pd.DataFrame) -> dict:
    """Weighted kappa, accuracy and both AUCs of patient categories (None where undefined)."""
    truth, predicted = patients.truth.to_numpy(), patients.predicted.to_numpy()
    figures = {
        "kappa_linear": category_kappa(truth, predicted),
        "accuracy": float((truth == predicted).mean()),
    }
    for name, cut in AUC_CUTS.items():
        positive = truth >= CATEGORIES.index(cut)
        both = positive.any() and (~positive).any()
        figures[name] = float(roc_auc_score(positive, patients[name])) if both else None
    return figures


def bootstrap(patients: pd.DataFrame, rounds: int, seed: int) -> dict:
    """95% percentile intervals of `patient_figures`, resampling patients."""
    if rounds <= 0 or patients.empty:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        sample = patients.iloc[rng.integers(0, len(patients), len(patients))]
        for key, value in patient_figures(sample).items():
            if value is not None:
                draws.setdefault(key, []).append(value)
    return {k: np.percentile(v, [2.5, 97.5]).round(4).tolist() for k, v in draws.items()}


def grade_metrics(predictions: pd.DataFrame, bootstrap_rounds: int, seed: int = 0) -> dict | None:
    """The CAD-RADS figures of test predictions with `branch_grade` (None for a three-class
    model, whose predictions carry no grades)."""
    if predictions.branch_grade.isna().all():
        return None
    branches = graded_branches(predictions)
    errors = grade_error(
        branches.grade.to_numpy(int),
        branches.grade_low.to_numpy(int),
        branches.grade_high.to_numpy(int),
    )
    patients = patient_categories(branches)
    counts = np.zeros((len(CATEGORIES), len(CATEGORIES)), int)
    np.add.at(counts, (patients.truth.to_numpy(), patients.predicted.to_numpy()), 1)
    return {
        "branch": {
            "n": len(branches),
            "grade_accuracy": float((errors == 0).mean()),
            "mean_absolute_grade_error": float(errors.mean()),
        },
        "patient": {
            "n": len(patients),
            **patient_figures(patients),
            "categories": list(CATEGORIES),
            "confusion_counts": counts.tolist(),
            "ci95": bootstrap(patients, bootstrap_rounds, seed),
        },
        "published": PUBLISHED,
    }


def against_truth(predictions: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """The model's branch grades and the report's intervals against true grades (patient_id,
    branch, `true_grade`: a synthetic cohort's percent stenosis as a grade index), which
    separates label noise (the report's interval missing the truth) from model error; and
    the patient category against the true one."""
    branches = graded_branches(predictions).merge(truth, on=["patient_id", "branch"])
    grade, true = branches.grade.to_numpy(int), branches.true_grade.to_numpy(int)
    low, high = branches.grade_low.to_numpy(int), branches.grade_high.to_numpy(int)
    true_patients = patient_categories(branches.assign(grade_low=branches.true_grade))
    return {
        "branches": len(branches),
        "model_grade_exact": float((grade == true).mean()),
        "model_mean_absolute_grade_error": float(np.abs(grade - true).mean()),
        "report_interval_holds_truth": float(((low <= true) & (true <= high)).mean()),
        "patient_kappa_linear_vs_truth": patient_figures(true_patients)["kappa_linear"],
    }


def grade_markdown(grades: dict | None) -> str:
    """The CAD-RADS figures as Markdown: the patient table and the category confusion."""
    if grades is None:
        return "A three-class model: no CAD-RADS grades (its category is a range)."
    patient, branch, ci = grades["patient"], grades["branch"], grades["patient"]["ci95"]

    def shown(key: str) -> str:
        value = patient[key]
        if value is None:
            return "-"
        low_high = ci.get(key)
        return f"{value:.3f}" + (f" ({low_high[0]:.2f}-{low_high[1]:.2f})" if low_high else "")

    lines = [
        "| patients | category accuracy | weighted kappa (linear) | rule-out AUC (0 vs 1-5) | "
        "hold-out AUC (0-2 vs 3-5) | branch grade accuracy | mean abs. grade error |",
        "|---|---|---|---|---|---|---|",
        f"| {patient['n']} | {shown('accuracy')} | {shown('kappa_linear')} | "
        f"{shown('rule_out_auc')} | {shown('hold_out_auc')} | "
        f"{branch['grade_accuracy']:.3f} | {branch['mean_absolute_grade_error']:.3f} |",
        "",
        "| report \\ model | " + " | ".join(patient["categories"]) + " |",
        "|---" * (len(patient["categories"]) + 1) + "|",
    ]
    for name, row in zip(patient["categories"], patient["confusion_counts"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    published = "; ".join(
        f"{who}: " + ", ".join(f"{k} {v}" for k, v in figures.items())
        for who, figures in PUBLISHED.items()
    )
    return "\n".join([*lines, "", f"Published: {published}. {PAPER_NOTE}"])

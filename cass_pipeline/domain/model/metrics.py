"""Roll-up of view predictions to branches, arteries and patients, and the metrics.

Branch ("segment" in the paper) = majority vote of its views, a tie going to the most severe
tied class; artery = most severe of its branches (LM folds into LAD, RI into LCX); patient =
most severe of their arteries. Classes are 0 no_stenosis < 1 non_significant < 2 significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from cass_pipeline.domain.anatomy import (
    ARTERY_OF_BRANCH,
    CAD_RADS_OF_CLASS,
    N_CLASSES,
    STENOSIS_CLASSES,
    category_of_grades,
)
from cass_pipeline.domain.model.config import EvaluateSettings


def majority_vote(predictions: np.ndarray) -> int:
    """Most frequent class; a tie goes to the most severe of the tied classes."""
    counts = np.bincount(np.asarray(predictions, dtype=int), minlength=N_CLASSES)
    return int(np.flatnonzero(counts == counts.max()).max())


def branch_level(views: pd.DataFrame) -> pd.DataFrame:
    """One row per (patient, branch): the label and the branch's class, `branch_pred` where
    the views carry it (the model's own aggregation), else the majority vote of `pred`."""
    grouped = views.groupby(["patient_id", "branch"], sort=True)
    decided = grouped.branch_pred.first() if "branch_pred" in views else None
    return pd.DataFrame(
        {
            "label": grouped.label.max(),
            "pred": grouped.pred.agg(majority_vote) if decided is None else decided,
            "n_views": grouped.size(),
        }
    ).reset_index()


def artery_level(branches: pd.DataFrame) -> pd.DataFrame:
    """Most severe branch label and prediction per (patient, artery)."""
    frame = branches.assign(artery=branches.branch.map(ARTERY_OF_BRANCH))
    return frame.groupby(["patient_id", "artery"], sort=True)[["label", "pred"]].max().reset_index()


def patient_level(arteries: pd.DataFrame) -> pd.DataFrame:
    """Most severe artery label and prediction per patient."""
    return arteries.groupby("patient_id", sort=True)[["label", "pred"]].max().reset_index()


def patient_cad_rads(views: pd.DataFrame) -> pd.Series:
    """Each patient's predicted CAD-RADS category, by patient_id: from the branch grades
    (`branch_grade`) of a grade model, else the range of the patient's class."""
    if "branch_grade" in views and views.branch_grade.notna().all():
        first = views.groupby(["patient_id", "branch"], sort=True).branch_grade.first()
        return first.groupby(level="patient_id").agg(
            lambda own: category_of_grades({branch: int(g) for (_, branch), g in own.items()})
        )
    classes = patient_level(artery_level(branch_level(views))).set_index("patient_id").pred
    return classes.map(lambda c: CAD_RADS_OF_CLASS[STENOSIS_CLASSES[int(c)]])


def weighted_f1(labels, predictions) -> float:
    """Weighted F1 with the truth first (the reference code had the arguments swapped)."""
    return float(
        f1_score(labels, predictions, average="weighted", labels=range(N_CLASSES), zero_division=0)
    )


#: The paper's Table 2 (105 test patients): (accuracy, weighted F1) per level.
PAPER_TABLE2 = {"segment": (0.81, 0.81), "artery": (0.81, 0.82), "patient": (0.80, 0.80)}
#: What every table that sets published figures beside ours says of them.
PAPER_NOTE = (
    "The CNN-CASS paper's figures (patient accuracy 0.80) and the other published figures "
    "shown beside ours come from real CCTA data at their sites; figures on a synthetic test "
    "cohort are not comparable with them."
)
LEVELS = ("segment", "artery", "patient")


def confusion(labels, predictions) -> np.ndarray:
    """3x3 counts, rows = truth (no_stenosis, non_significant, significant)."""
    matrix = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(matrix, (np.asarray(labels, int), np.asarray(predictions, int)), 1)
    return matrix


def level_metrics(
    frame: pd.DataFrame, bootstrap: int = EvaluateSettings.bootstrap, seed: int = 0
) -> dict:
    """Accuracy, weighted F1, row-normalised confusion, per-class sensitivity and specificity,
    the share of significant cases called no_stenosis, and 95% bootstrap intervals of accuracy
    and weighted F1 over patients."""
    labels, preds = frame.label.to_numpy(int), frame.pred.to_numpy(int)
    counts = confusion(labels, preds)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    total = counts.sum()
    sensitivity, specificity = [], []
    for k in range(N_CLASSES):
        tp, fn = counts[k, k], counts[k].sum() - counts[k, k]
        fp = counts[:, k].sum() - tp
        tn = total - tp - fn - fp
        sensitivity.append(float(tp / (tp + fn)) if tp + fn else None)
        specificity.append(float(tn / (tn + fp)) if tn + fp else None)
    significant = labels == 2
    missed = float((preds[significant] == 0).mean()) if significant.any() else None
    return {
        "n": len(frame),
        "accuracy": float((labels == preds).mean()) if len(frame) else None,
        "f1_weighted": weighted_f1(labels, preds) if len(frame) else None,
        "confusion_matrix": normalised.round(4).tolist(),
        "confusion_counts": counts.tolist(),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "significant_called_no_stenosis": missed,
        "ci95": bootstrap_intervals(frame, bootstrap, seed),
    }


def bootstrap_intervals(frame: pd.DataFrame, rounds: int, seed: int) -> dict:
    """95% percentile intervals of accuracy and weighted F1, resampling whole patients."""
    if rounds <= 0 or frame.empty:
        return {}
    groups = [g for _, g in frame.groupby("patient_id")]
    labels = [g.label.to_numpy(int) for g in groups]
    preds = [g.pred.to_numpy(int) for g in groups]
    rng = np.random.default_rng(seed)
    accuracy, f1 = [], []
    for _ in range(rounds):
        pick = rng.integers(0, len(groups), len(groups))
        y = np.concatenate([labels[i] for i in pick])
        p = np.concatenate([preds[i] for i in pick])
        accuracy.append((y == p).mean())
        f1.append(weighted_f1(y, p))
    return {
        "accuracy": np.percentile(accuracy, [2.5, 97.5]).round(4).tolist(),
        "f1_weighted": np.percentile(f1, [2.5, 97.5]).round(4).tolist(),
    }


def evaluate(
    views: pd.DataFrame, bootstrap: int = EvaluateSettings.bootstrap, seed: int = 0
) -> dict:
    """Metrics at the segment (branch), artery and patient level from view predictions with
    columns patient_id, branch, view_index, label, pred (and optionally branch_pred)."""
    if views.empty:
        raise ValueError("no predictions to evaluate (the table is empty)")
    missing = {"patient_id", "branch", "view_index", "label", "pred"} - set(views.columns)
    if missing:
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    bad = ~views.label.isin(range(N_CLASSES)) | ~views.pred.isin(range(N_CLASSES))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows have a label or prediction outside 0-2")
    unknown = set(views.branch) - set(ARTERY_OF_BRANCH)
    if unknown:
        raise ValueError(f"unknown branch names {sorted(unknown)}")
    branches = branch_level(views)
    arteries = artery_level(branches)
    patients = patient_level(arteries)
    return {
        level: level_metrics(frame, bootstrap, seed)
        for level, frame in zip(LEVELS, (branches, arteries, patients), strict=True)
    }

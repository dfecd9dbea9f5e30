"""Roll-up of view predictions to branches, arteries and patients, and the metrics.

Branch ("segment" in the paper) = majority vote of its views, a tie going to the most severe
tied class; artery = most severe of its branches (LM folds into LAD, RI into LCX); patient =
most severe of their arteries. Classes are 0 no_stenosis < 1 non_significant < 2 significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH

N_CLASSES = 3


def majority_vote(predictions: np.ndarray) -> int:
    """Most frequent class; a tie goes to the most severe of the tied classes."""
    counts = np.bincount(np.asarray(predictions, dtype=int), minlength=N_CLASSES)
    return int(np.flatnonzero(counts == counts.max()).max())


def branch_level(views: pd.DataFrame) -> pd.DataFrame:
    """One row per (patient, branch): the label and the majority vote of the view predictions."""
    grouped = views.groupby(["patient_id", "branch"], sort=True)
    return pd.DataFrame(
        {
            "label": grouped.label.max(),
            "pred": grouped.pred.agg(majority_vote),
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


def weighted_f1(labels, predictions) -> float:
    """Weighted F1 with the truth first (the reference code had the arguments swapped)."""
    return float(
        f1_score(labels, predictions, average="weighted", labels=range(N_CLASSES), zero_division=0)
    )

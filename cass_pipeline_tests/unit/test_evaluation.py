"""Roll-up and metrics against hand-worked examples."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from cass_pipeline.domain.model.metrics import (
    artery_level,
    branch_level,
    evaluate,
    majority_vote,
    patient_level,
    weighted_f1,
)


def views(rows):
    return pd.DataFrame(rows, columns=["patient_id", "branch", "view_index", "label", "pred"])


def test_majority_vote_ties_go_to_the_most_severe_class():
    assert majority_vote([0, 0, 1]) == 0
    assert majority_vote([0, 1]) == 1
    assert majority_vote([2, 0, 0, 2, 1]) == 2
    assert majority_vote([1, 1, 0, 0, 2, 2]) == 2
    assert majority_vote([0, 0, 1, 1, 2]) == 1


def test_rollup_by_hand():
    frame = views(
        [
            ("A", "LAD", 0, 2, 2),
            ("A", "LAD", 1, 2, 0),
            ("A", "LAD", 2, 2, 2),  # vote 2
            ("A", "D-1", 0, 0, 1),
            ("A", "D-1", 1, 0, 0),  # tie 0/1 -> 1
            ("A", "LM", 0, 1, 0),
            ("A", "LM", 1, 1, 0),  # vote 0
            ("A", "RI", 0, 0, 0),  # RI -> LCX
            ("B", "PLV-RCA", 0, 1, 1),
            ("B", "PLV-RCA", 1, 1, 1),
            # B has no LAD or LCX branch at all: its arteries are RCA only.
        ]
    )
    branches = branch_level(frame).set_index(["patient_id", "branch"])
    assert branches.loc[("A", "LAD")].tolist() == [2, 2, 3]
    assert branches.loc[("A", "D-1"), "pred"] == 1
    assert branches.loc[("A", "LM"), "pred"] == 0
    arteries = artery_level(branches.reset_index()).set_index(["patient_id", "artery"])
    assert arteries.loc[("A", "LAD")].tolist() == [2, 2]  # LM folds into LAD
    assert arteries.loc[("A", "LCX")].tolist() == [0, 0]  # RI folds into LCX
    assert list(arteries.loc["B"].index) == ["RCA"]
    patients = patient_level(arteries.reset_index()).set_index("patient_id")
    assert patients.loc["A"].tolist() == [2, 2] and patients.loc["B"].tolist() == [1, 1]


def test_metrics_by_hand():
    frame = views(
        [
            ("A", "LAD", 0, 2, 0),
            ("B", "LAD", 0, 2, 2),
            ("C", "LAD", 0, 0, 0),
            ("D", "LAD", 0, 1, 0),
            ("E", "LAD", 0, 0, 1),
        ]
    )
    segment = evaluate(frame, bootstrap=200)["segment"]
    assert segment["n"] == 5 and segment["accuracy"] == pytest.approx(0.4)
    assert segment["confusion_counts"] == [[1, 1, 0], [1, 0, 0], [1, 0, 1]]
    assert segment["confusion_matrix"][2] == [0.5, 0.0, 0.5]
    assert segment["sensitivity"] == [0.5, 0.0, 0.5]
    assert segment["specificity"][2] == 1.0
    assert segment["significant_called_no_stenosis"] == 0.5
    # weighted F1 by hand: class F1 0.4 (2 cases), 0 (1), 2/3 (2) -> (0.8 + 0 + 4/3) / 5
    assert segment["f1_weighted"] == pytest.approx((0.8 + 4 / 3) / 5)
    low, high = segment["ci95"]["accuracy"]
    assert 0 <= low <= 0.4 <= high <= 1


def test_a_planted_wrong_order_f1_is_caught():
    labels = np.array([0, 0, 0, 0, 0, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    swapped = f1_score(preds, labels, average="weighted")  # the reference code's mistake
    assert weighted_f1(labels, preds) == pytest.approx(f1_score(labels, preds, average="weighted"))
    assert weighted_f1(labels, preds) != pytest.approx(swapped)


def test_bad_predictions_are_refused():
    with pytest.raises(ValueError, match="outside 0-2"):
        evaluate(views([("A", "LAD", 0, 3, 0)]))
    with pytest.raises(ValueError, match="unknown branch"):
        evaluate(views([("A", "XYZ", 0, 1, 0)]))
    with pytest.raises(ValueError, match="lack columns"):
        evaluate(pd.DataFrame({"patient_id": ["A"]}))

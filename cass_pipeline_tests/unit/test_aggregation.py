"""Attention pooling over a branch's views: it finds the one view that shows the lesion."""

import numpy as np
import pandas as pd
import torch

from cass_pipeline.domain.model.aggregation import (
    AttentionPooling,
    Bags,
    attention_probabilities,
    branch_outputs,
    decide_branches,
    fit_attention,
)
from cass_pipeline.domain.model.metrics import evaluate
from cass_pipeline.domain.model.targets import OUTPUT_SPACES

CLASSES, GRADES = OUTPUT_SPACES["class"], OUTPUT_SPACES["grade"]

DIM, VIEWS = 8, 6


def bags(n: int, seed: int) -> Bags:
    """Label 0: noise only; label 1 / 2: one view (of six) carries a weak / strong signal."""
    rng = np.random.default_rng(seed)
    embeddings, labels = [], []
    for i in range(n):
        label = i % 3
        bag = rng.normal(0, 0.2, (VIEWS, DIM)).astype(np.float32)
        if label:
            bag[rng.integers(VIEWS), :2] += 2.0 * label
        embeddings.append(bag)
        labels.append(label)
    return Bags(embeddings, np.array(labels), np.eye(3, dtype=np.float32)[labels])


def graded_bags(n: int, seed: int) -> Bags:
    """`bags` whose labels are grade intervals: class 1 allows minimal-mild, class 2 is
    moderate-severe (a "significant" report without a percentage)."""
    plain = bags(n, seed)
    intervals = {0: (0, 0), 1: (1, 2), 2: (3, 4)}
    frame = pd.DataFrame(
        {
            "grade_low": [intervals[c][0] for c in plain.labels],
            "grade_high": [intervals[c][1] for c in plain.labels],
        }
    )
    return Bags(plain.embeddings, plain.labels, GRADES.targets(frame))


def test_attention_learns_a_label_carried_by_one_view_of_the_branch():
    head, validation_f1 = fit_attention(bags(150, 0), bags(60, 1), CLASSES, seed=0, epochs=15)
    test = bags(90, 2)
    predicted = branch_outputs(head, test.embeddings)
    assert validation_f1 > 0.9
    assert (predicted == test.labels).mean() > 0.9
    lesion = test.embeddings[2]  # label 2
    weights = head.weights(torch.as_tensor(lesion)).detach().numpy()
    assert weights.argmax() == np.abs(lesion[:, :2]).sum(1).argmax()
    assert abs(attention_probabilities(head, lesion).sum() - 1) < 1e-6


def test_the_same_seed_gives_the_same_head():
    first, _ = fit_attention(bags(30, 0), bags(15, 1), CLASSES, seed=3, epochs=3)
    second, _ = fit_attention(bags(30, 0), bags(15, 1), CLASSES, seed=3, epochs=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_grade_head_learns_from_interval_labels_and_keeps_the_classes():
    head, validation_f1 = fit_attention(
        graded_bags(150, 0), graded_bags(60, 1), GRADES, seed=0, epochs=30
    )
    test = graded_bags(90, 2)
    grades = branch_outputs(head, test.embeddings)
    assert head.classify.out_features == 6
    assert validation_f1 > 0.9
    assert (GRADES.classes_of(grades) == test.labels).mean() > 0.9


def test_bags_follow_the_views_branches():
    views = pd.DataFrame(
        {
            "patient_id": ["b", "a", "a", "a", "b"],
            "branch": ["LAD", "RCA", "LAD", "RCA", "LAD"],
            "label": [2, 0, 1, 0, 2],
            "grade_low": [3, 0, 1, 0, 3],
            "grade_high": [4, 0, 2, 0, 4],
        }
    )
    embeddings = np.arange(10, dtype=np.float32).reshape(5, 2)
    grouped = Bags.of(views, embeddings, GRADES)
    assert grouped.labels.tolist() == [1, 0, 2]  # (a, LAD), (a, RCA), (b, LAD)
    np.testing.assert_array_equal(grouped.embeddings[1], embeddings[[1, 3]])
    assert grouped.targets[0].tolist() == [0, 1, 1, 0, 0, 0]  # minimal-mild


def test_evaluation_uses_the_branch_decision_the_views_carry():
    views = pd.DataFrame(
        {
            "patient_id": ["a"] * 3,
            "branch": ["LAD"] * 3,
            "view_index": [0, 1, 2],
            "label": [2, 2, 2],
            "pred": [0, 0, 2],
        }
    )
    assert evaluate(views, bootstrap=0)["segment"]["accuracy"] == 0.0  # the vote says 0
    decided = evaluate(views.assign(branch_pred=2), bootstrap=0)
    assert decided["segment"]["accuracy"] == 1.0


def test_a_head_round_trips_through_its_state_dict():
    head = AttentionPooling(DIM)
    again = AttentionPooling(DIM)
    again.load_state_dict(head.state_dict())
    bag = bags(3, 0).embeddings[2]
    np.testing.assert_allclose(
        attention_probabilities(head, bag), attention_probabilities(again, bag)
    )


def test_each_view_carries_the_decision_of_its_branch():
    views = pd.DataFrame(
        {
            "patient_id": ["b", "a", "a", "a", "b"],
            "branch": ["LAD", "RCA", "LAD", "RCA", "LAD"],
            "pred": [2, 0, 1, 2, 0],
        }
    )
    # (a, LAD) votes 1; (a, RCA) and (b, LAD) tie 0-2, going to 2
    assert decide_branches(views, None, None).tolist() == [2, 2, 1, 2, 2]
    head = AttentionPooling(DIM)
    embeddings = bags(5, 0).embeddings[0][:5]
    decided = decide_branches(views, embeddings, head)
    for rows in ([1, 3], [2], [0, 4]):
        expected = attention_probabilities(head, embeddings[rows]).argmax()
        assert (decided[rows] == expected).all()

"""CAD-RADS grades: interval labels, the ordinal losses, the patient category (4A / 4B / 5)
from branch grades through the one roll-up, and the grade figures of an evaluation."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cass_pipeline.domain.anatomy import GRADES, category_of_grades, grade_interval
from cass_pipeline.domain.evaluation.grades import grade_markdown, grade_metrics
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.model.targets import OUTPUT_SPACES
from cass_pipeline.domain.prediction.bundle import ModelBundle
from cass_pipeline.domain.prediction.document import prediction_document, terminal_lines
from cass_pipeline.domain.prediction.rollup import roll_up

GRADED = ModelBundle("shufflenet_v2_x0_5", IngestConfig(CleanupConfig(size=32)), target="grade")
THREE_CLASS = replace(GRADED, target="class")
G = {name: i for i, name in enumerate(GRADES)}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (("no_stenosis", 0, 0), ("none", "none")),
        (("non_significant", 1, 49), ("minimal", "mild")),  # "<50%", "non-obstructive"
        (("non_significant", 25, 50), ("mild", "mild")),  # "25-50%" reads as mild
        (("significant", 50, 99), ("moderate", "severe")),  # "significant", "obstructive"
        (("significant", 70, 99), ("severe", "severe")),
        (("significant", 100, 100), ("occluded", "occluded")),
        (("non_significant", None, None), ("minimal", "mild")),  # a reviewer's class alone
        (("non_significant", 50, 50), ("minimal", "mild")),  # a bare 50% read as mild
    ],
)
def test_a_label_allows_the_grades_its_range_spans_within_its_class(label, expected):
    low, high = grade_interval(*label)
    assert (GRADES[low], GRADES[high]) == expected


@pytest.mark.parametrize(
    ("grades", "category"),
    [
        ({}, "0"),
        ({"LAD": G["minimal"]}, "1"),
        ({"LAD": G["mild"], "RCA": G["minimal"]}, "2"),
        ({"LCX": G["moderate"]}, "3"),
        ({"LAD": G["severe"], "RCA": G["severe"]}, "4A"),  # two vessels
        ({"LM": G["moderate"]}, "4B"),  # left main >= 50%
        ({"LAD": G["severe"], "OM-1": G["severe"], "PDA-RCA": G["severe"]}, "4B"),  # 3 vessels
        ({"LM": G["severe"], "RCA": G["occluded"]}, "5"),
    ],
)
def test_the_patient_category_follows_cad_rads_2(grades, category):
    assert category_of_grades(grades) == category


def test_interval_loss_is_the_likelihood_of_the_allowed_grades():
    grades = OUTPUT_SPACES["grade"]
    labels = pd.DataFrame({"label": [1, 2], "grade_low": [1, 4], "grade_high": [2, 4]})
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, 0.0, -1.0], [0.0] * 6])
    p = torch.softmax(logits, 1)
    expected = -torch.log(torch.stack([p[0, 1] + p[0, 2], p[1, 4]]))
    targets = torch.as_tensor(grades.targets(labels))
    torch.testing.assert_close(grades.loss(logits, targets), expected)
    soft = OUTPUT_SPACES["soft_grade"].targets(labels)
    assert soft.sum(1) == pytest.approx([1, 1])
    assert soft[0, 1] == soft[0, 2] > soft[0, 3] > soft[0, 4] > 0  # ordinal neighbours
    three = grades.class_probabilities(np.full((1, 6), 1 / 6))
    assert three[0] == pytest.approx([1 / 6, 2 / 6, 3 / 6])


def view(branch, index, grade_p):
    p = np.asarray(grade_p, float) / np.sum(grade_p)
    grade = GRADES[int(p.argmax())]
    classes = OUTPUT_SPACES["grade"].class_probabilities(p[None])[0]
    return {
        "branch": branch,
        "view_index": index,
        "source": f"{branch}/{index}.dcm",
        "stenosis_class": ("no_stenosis", "non_significant", "significant")[
            int(OUTPUT_SPACES["grade"].classes_of(p.argmax()))
        ],
        "grade": grade,
        **dict(zip(["p_no_stenosis", "p_non_significant", "p_significant"], classes, strict=True)),
        **{f"p_{g}": v for g, v in zip(GRADES, p, strict=True)},
    }


def one_hot(grade: str, sure: float = 0.9) -> list[float]:
    return [sure if g == grade else (1 - sure) / 5 for g in GRADES]


def test_left_main_moderate_makes_the_patient_4b_in_the_served_document():
    views = pd.DataFrame(
        [
            view("LM", 0, one_hot("moderate")),
            view("LM", 1, one_hot("mild")),  # a 1-1 tie goes to the more severe grade
            view("RCA", 0, one_hot("minimal")),
        ]
    )
    table = roll_up("P1", views, [], GRADED)
    patient = table[table.level == "patient"].iloc[0]
    assert (patient.cad_rads, patient.stenosis_class, patient.grade) == (
        "4B",
        "significant",
        "moderate",
    )
    document = prediction_document(table, {"name": "cass-stenosis", "version": 3})
    assert document["cad_rads"] == "4B" and document["cad_rads_from"] == "branch grades"
    lm = document["branches"]["LM"]
    assert lm["grade"] == "moderate" and lm["grade_votes"]["mild"] == 1
    assert sum(lm["grade_probabilities"].values()) == pytest.approx(1)
    assert "moderate 50-69%" in "\n".join(terminal_lines(document, "cass-stenosis", 3))


def test_three_vessels_severe_is_4b_and_a_three_class_model_keeps_its_range():
    views = pd.DataFrame(
        [view(b, 0, one_hot("severe")) for b in ("LAD", "OM-1", "RCA")]
        + [view("D-1", 0, one_hot("occluded", 0.3))]  # unsure: P(occluded) 0.3, the top
    )
    graded = roll_up("P1", views.iloc[:3], [], GRADED)
    assert graded[graded.level == "patient"].cad_rads.iloc[0] == "4B"
    occluded = roll_up("P1", views, [], GRADED)
    assert occluded[occluded.level == "patient"].cad_rads.iloc[0] == "5"
    older = views.drop(columns=["grade", *(f"p_{g}" for g in GRADES)])
    table = roll_up("P1", older, [], THREE_CLASS)
    patient = table[table.level == "patient"].iloc[0]
    assert (patient.cad_rads, patient.grade) == ("3-5", None)
    document = prediction_document(table, {})
    assert document["cad_rads_from"] == "patient class (a range)"
    assert document["branches"]["LAD"]["grade_probabilities"] is None


def test_grade_figures_count_a_grade_inside_the_interval_as_right():
    rows = []
    # P0: LAD "<50%" predicted mild (inside), RCA none -> report 1, model 2
    # P1: LM 50-69 predicted severe (one grade off) -> 4B both
    # P2: normal, predicted normal
    for patient, branch, low, high, grade, label in [
        ("P0", "LAD", 1, 2, 2, 1),
        ("P0", "RCA", 0, 0, 0, 0),
        ("P1", "LM", 3, 3, 4, 2),
        ("P2", "LAD", 0, 0, 0, 0),
    ]:
        p = np.full(6, 0.02)
        p[grade] = 0.9
        rows.append(
            {
                "patient_id": patient,
                "branch": branch,
                "grade_low": low,
                "grade_high": high,
                "branch_grade": grade,
                "label": label,
                **{f"p_{g}": v for g, v in zip(GRADES, p, strict=True)},
            }
        )
    figures = grade_metrics(pd.DataFrame(rows), bootstrap_rounds=20)
    assert figures["branch"]["grade_accuracy"] == pytest.approx(3 / 4)
    assert figures["branch"]["mean_absolute_grade_error"] == pytest.approx(1 / 4)
    patient = figures["patient"]
    counts = np.array(patient["confusion_counts"])
    categories = patient["categories"]
    assert counts[categories.index("1"), categories.index("2")] == 1
    assert counts[categories.index("4B"), categories.index("4B")] == 1
    assert patient["accuracy"] == pytest.approx(2 / 3)
    assert patient["rule_out_auc"] == 1.0 and patient["hold_out_auc"] == 1.0
    assert set(patient["ci95"]) >= {"kappa_linear", "accuracy"}
    shown = grade_markdown(figures)  # published figures never stand as comparable
    assert "van Herten et al." in shown and "not comparable" in shown
    three_class = pd.DataFrame(rows).assign(branch_grade=pd.NA)
    assert grade_metrics(three_class, bootstrap_rounds=0) is None


def test_cass_evaluate_adds_the_cad_rads_figures_of_grade_predictions(tmp_path):
    from click.testing import CliRunner

    from cass_pipeline.cli import main

    p = np.full(6, 0.02)
    p[3] = 0.9
    rows = [
        {
            "patient_id": f"P{k}",
            "branch": "LM" if k % 2 else "LAD",
            "view_index": 0,
            "label": 2 if k % 2 else 0,
            "pred": 2 if k % 2 else 0,
            "grade_low": 3 if k % 2 else 0,
            "grade_high": 3 if k % 2 else 0,
            "branch_grade": 3 if k % 2 else 0,
            **{
                f"p_{g}": (v if k % 2 else 0.9 * (g == "none") + 0.02)
                for g, v in zip(GRADES, p, strict=True)
            },
        }
        for k in range(6)
    ]
    path = tmp_path / "predictions.parquet"
    pd.DataFrame(rows).to_parquet(path)
    shown = CliRunner().invoke(main, ["evaluate", str(path), "--bootstrap", "0"])
    assert shown.exit_code == 0, shown.output
    assert "weighted kappa" in shown.output and "| 4B | 0 | 0 | 0 | 0 | 0 | 3 | 0 |" in shown.output
    as_json = CliRunner().invoke(main, ["evaluate", str(path), "--json", "--bootstrap", "0"])
    assert json.loads(as_json.output)["cad_rads"]["patient"]["kappa_linear"] == 1.0

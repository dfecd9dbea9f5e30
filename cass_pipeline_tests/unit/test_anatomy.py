"""Grades, classes and CAD-RADS categories of percent stenoses."""

import pytest

from cass_pipeline.domain.anatomy import (
    ARTERY_OF_BRANCH,
    BRANCHES,
    cad_rads_category,
    class_of_percent,
    grade_of_percent,
    plaque_burden,
)


@pytest.mark.parametrize(
    ("pct", "grade", "label"),
    [
        (0, "none", "no_stenosis"),
        (1, "minimal", "non_significant"),
        (24, "minimal", "non_significant"),
        (25, "mild", "non_significant"),
        (49, "mild", "non_significant"),
        (50, "moderate", "significant"),
        (69, "moderate", "significant"),
        (70, "severe", "significant"),
        (99, "severe", "significant"),
        (100, "occluded", "significant"),
    ],
)
def test_percent_to_grade_and_class(pct, grade, label):
    assert grade_of_percent(pct) == grade
    assert class_of_percent(pct) == label


@pytest.mark.parametrize(
    ("maxima", "category"),
    [
        ({}, "0"),
        ({"LAD": 0}, "0"),
        ({"LAD": 20}, "1"),
        ({"RCA": 40}, "2"),
        ({"OM-1": 60}, "3"),
        ({"D-1": 80}, "4A"),
        ({"LM": 50}, "4B"),
        ({"LAD": 75, "OM-2": 70, "PLV-RCA": 90}, "4B"),
        ({"LAD": 75, "RCA": 90}, "4A"),
        ({"PDA-RCA": 100, "LM": 60}, "5"),
    ],
)
def test_cad_rads_category(maxima, category):
    assert cad_rads_category(maxima) == category


def test_plaque_burden_and_branch_table():
    assert [plaque_burden(s) for s in (None, 0, 1, 100, 101, 300, 301, 999, 1000)] == [
        None,
        None,
        "P1",
        "P1",
        "P2",
        "P2",
        "P3",
        "P3",
        "P4",
    ]
    assert set(ARTERY_OF_BRANCH) == set(BRANCHES)
    assert ARTERY_OF_BRANCH["LM"] == "LAD" and ARTERY_OF_BRANCH["RI"] == "LCX"

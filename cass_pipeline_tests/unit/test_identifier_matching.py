"""Identifier scans match whole tokens in values, so common short names do not cry wolf."""

import pandas as pd

from cass_pipeline.domain.privacy import identifiers_found, table_values


def test_names_numbers_and_dates_match_as_whole_tokens_only():
    identifiers = {"TED, Ina", "Ted", "Ina", "Pat", "Art", "Al", "Li", "55500011", "1961-03-04"}
    clean = [
        "iodinated contrast, original series",
        "patient_id",
        "artery calcium normal",
        "P55500011a7 155500011 555000112",
        "1961-03-05",
        "04.03.1961",
    ]
    assert identifiers_found(clean, identifiers) == set()
    leaks = ["seen by Dr. ted", "MRN 55500011.", "born 1961-03-04", "Li^Al", "TED,INA"]
    assert identifiers_found(leaks, identifiers) == {
        "ted",
        "55500011",
        "1961 03 04",
        "li",
        "al",
        "ted ina",
        "ina",
    }


def test_table_values_leave_column_names_out():
    frame = pd.DataFrame({"patient_id": ["P1"], "artery": ["LAD"], "n": [3]})
    assert sorted(table_values(frame)) == ["3", "LAD", "P1"]
    assert identifiers_found(table_values(frame), {"Pat", "Art"}) == set()

"""Identifier scans match whole tokens in values, so common short names do not cry wolf."""

import pandas as pd
import pydicom

from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.views import SourceFile, assign_branches, read_views
from cass_pipeline.domain.privacy import identifiers_found, redacted, table_values


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


def test_a_series_description_keeps_its_words_but_not_the_patients():
    identifiers = {"DOE^JOHN", "DOE", "JOHN", "JXD191021006"}
    assert redacted("LAD DOE^JOHN JXD191021006 curved", identifiers) == (
        "LAD [identifier] [identifier] curved"
    )
    assert redacted("lad_doe_john", identifiers) == "lad_[identifier]"
    assert redacted("LADDER johnson", {"LAD", "JOHN"}) == "LADDER johnson"


def test_a_series_named_with_the_patient_is_rejected_without_the_name(tiny_cohort, tmp_path):
    source = next(p for p in sorted((tiny_cohort / "mpr").rglob("*.dcm")))
    dataset = pydicom.dcmread(source)
    dataset.PatientName, dataset.PatientID = "DOE^JOHN", "JXD191021006"
    dataset.SeriesDescription = "DOE JOHN JXD191021006 review"  # as workstations write it
    dataset.save_as(tmp_path / "1.dcm")
    file = SourceFile("x/1.dcm", "x", (tmp_path / "1.dcm").read_bytes())
    views, _ = read_views([file], "P-1", IngestConfig())
    _, rejects = assign_branches(views, "P-1", IngestConfig(min_views=1))
    assert rejects and all("JOHN" not in r["reason"] and "JXD" not in r["reason"] for r in rejects)
    assert "[identifier]" in rejects[0]["reason"]

"""Readers' verdicts as training labels: only when asked for, only verdicts that hold
together, their patients in training alone and moving no report-labelled patient."""

import pandas as pd
import pytest

from cass_pipeline.domain.model.splits import (
    cross_validation_folds,
    patient_splits,
    reader_labelled,
    with_reader_patients,
)
from cass_pipeline.domain.prediction.inbox import InboxStudy
from cass_pipeline.domain.reports.pipeline import (
    ALREADY_REPORTED,
    ParsedCohort,
    ParsedReport,
    add_reader_labels,
)
from cass_pipeline.domain.reports.tables import report_tables
from cass_pipeline.domain.review.cohort import (
    NO_STUDY,
    READERS_DIFFER,
    reader_report_labels,
    reader_studies,
    verdict_labels,
)
from cass_pipeline.domain.review.store import Verdict

CASS_READ = {"LAD": "significant", "RCA": "no_stenosis"}


def verdict(patient, user="rea", agree=False, category="2", study="S1", **branches):
    """A verdict on CASS's 4A: agreed, or read as `category` with `branches` corrected."""
    read = CASS_READ | ({} if agree else branches)
    return Verdict(patient, user, 0.0, "3", "4A", True, agree, None if agree else category,
                   read, "", study)  # fmt: skip


def test_verdicts_label_only_when_asked_and_only_when_they_hold_together():
    verdicts = [
        verdict("P1", LAD="non_significant"),  # corrected, consistent
        verdict("P2", agree=True),
        verdict("P3", LAD="non_significant"),  # two readers who differ...
        verdict("P3", user="rob", category="4A", agree=False),
        verdict("P4", LAD="non_significant"),  # ...and two whom an admin settles
        verdict("P4", user="ada", category="3"),
        verdict("P5", category="2"),  # 2 read, yet LAD left significant
        verdict("P6", category="N", LAD="non_significant"),
        verdict("P7", LAD="non_significant", study=None),
    ]
    assert verdict_labels(verdicts, "off")[0].empty
    with pytest.raises(ValueError, match="corrected"):
        verdict_labels(verdicts, "always")
    table, left_out = verdict_labels(verdicts, "corrected", admins=frozenset({"ada"}))
    labelled = table.groupby("patient_id").apply(
        lambda rows: dict(zip(rows.branch, rows.stenosis_class, strict=True)),
        include_groups=False,
    )
    assert labelled.to_dict() == {
        "P1": {"LAD": "non_significant", "RCA": "no_stenosis"},
        "P4": CASS_READ,  # the admin's reading
    }
    assert set(table.study) == {"S1"} and table.corrected.all()
    reasons = dict(zip(left_out.patient_id, left_out.reason, strict=True))
    assert reasons["P3"] == READERS_DIFFER and reasons["P7"] == NO_STUDY
    assert "CAD-RADS 2 read" in reasons["P5"] and "non-diagnostic" in reasons["P6"]
    judged, _ = verdict_labels(verdicts, "judged", admins=frozenset({"ada"}))
    assert set(judged.patient_id) == {"P1", "P2", "P4"}  # agreeing verdicts too


def test_reader_labels_join_the_tables_but_never_replace_a_report():
    table, _ = verdict_labels([verdict("P1", LAD="non_significant")], "corrected")
    labelled = reader_report_labels(table)
    assert labelled["P1"].patient_class == "non_significant" and labelled["P1"].cad_rads == "2"
    cohort = ParsedCohort()
    add_reader_labels(cohort, labelled)
    tables = {name: t.to_pandas() for name, t in report_tables(cohort).items()}
    branches = tables["branch_labels"]
    assert set(branches.source) == {"reader"} and reader_labelled(branches) == {"P1"}
    assert tables["patient_labels"].patient_id.tolist() == ["P1"]
    assert tables["deidentified_reports"].empty  # no report text behind a verdict
    reported = ParsedCohort(reports=[ParsedReport("P1", "LAD: 80%.", "sha", {}, labelled["P1"])])
    add_reader_labels(reported, labelled)
    assert not reported.labelled_by_readers
    assert [r.reason for r in reported.rejects] == [ALREADY_REPORTED]


def test_reader_patients_train_only_and_move_no_other_patient():
    patients = pd.DataFrame(
        {"patient_id": [f"P{i:02d}" for i in range(30)], "patient_class": ["significant"] * 30}
    )
    alone = patient_splits(patients, seed=7)
    readers = pd.DataFrame({"patient_id": ["R1", "R2"], "patient_class": ["no_stenosis"] * 2})
    joined = with_reader_patients(alone, readers)
    by_reader = joined[joined.origin == "reader"]
    assert set(by_reader.patient_id) == {"R1", "R2"} and set(by_reader.split) == {"train"}
    report = joined[joined.origin == "report"].drop(columns="origin").reset_index(drop=True)
    assert report.equals(alone)
    folds = cross_validation_folds(joined, 3, seed=7)
    assert not set(folds.patient_id) & {"R1", "R2"}  # they train in every fold


def test_judged_studies_are_found_in_the_inbox_or_rejected_with_the_reason(tmp_path):
    table = pd.DataFrame(
        {
            "patient_id": ["P1", "P2", "P3"],
            "study": ["S1", "S2", "S3"],
            "branch": ["LAD"] * 3,
            "stenosis_class": ["significant"] * 3,
        }
    )
    folders = {name: tmp_path / name for name in ("MRN-1", "MRN-3")}
    studies = [
        InboxStudy("P1", "S1", folders["MRN-1"]),
        InboxStudy("P3", "S3", folders["MRN-3"]),
        InboxStudy("P1", "S9", tmp_path / "older"),
    ]
    found = reader_studies(table, studies, lambda folder: folder == folders["MRN-3"])
    assert [(s.key, s.mpr_dir) for s in found.sources] == [("MRN-1", folders["MRN-1"])]
    assert "MRN-1" in found.sources[0].identifiers  # the pixel check looks for it
    reasons = {r["patient_id"]: r["reason"] for r in found.not_ingested}
    assert "no longer in the inbox" in reasons["P2"] and "already in the cohort" in reasons["P3"]
    assert all("MRN" not in str(r) for r in found.not_ingested)

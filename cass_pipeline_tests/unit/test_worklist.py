"""The reading room's worklist: referred first, then by significance score."""

import json
import os

from cass_pipeline.domain.prediction.worklist import (
    DELIVERED,
    FAILED,
    PENDING,
    WORKLIST_SCHEMA,
    merged_refusals,
    record_delivery,
    refusal_rows,
    worklist_table,
)


def predicted(root, patient, refer, score, category, at):
    folder = root / patient
    folder.mkdir(parents=True)
    document = {
        "refer": refer,
        "significant_score": score,
        "cad_rads": category,
        "patient_class": "significant" if refer else "no_stenosis",
        "model": {"version": 4},
        "study": f"S-{patient}",
        "note": None if score is not None else "no view could be used",
    }
    (folder / "prediction.json").write_text(json.dumps(document))
    os.utime(folder / "prediction.json", (at, at))


def test_referred_patients_come_first_then_the_highest_scores(tmp_path):
    predicted(tmp_path, "P-low", False, 0.10, "0", 1_000_100.4)
    predicted(tmp_path, "P-refer-low", True, 0.35, "2", 1_000_200)
    predicted(tmp_path, "P-high", False, 0.30, "1", 1_000_300)
    predicted(tmp_path, "P-refer-high", True, 0.90, "4A", 1_000_400)
    predicted(tmp_path, "P-none", None, None, None, 1_000_500)  # no usable view
    received = {"S-P-refer-high": 1_000_350.0, "S-P-low": 1_000_000.0}
    table = worklist_table(tmp_path, received, "prediction.json")
    assert list(table.columns) == WORKLIST_SCHEMA.names
    assert table.patient.tolist() == ["P-refer-high", "P-refer-low", "P-high", "P-low", "P-none"]
    assert table.turnaround_s.tolist()[0] == 50.0 and table.turnaround_s.isna().sum() == 3
    assert table.cad_rads.tolist()[:2] == ["4A", "2"] and table.model_version.iloc[0] == "4"
    assert worklist_table(tmp_path / "none", {}, "prediction.json").empty
    assert table.status.tolist() == ["scored"] * 4 + ["not scored: no view could be used"]


def test_a_refused_study_is_listed_as_not_scored_with_the_reason(tmp_path):
    predicted(tmp_path, "P-a", True, 0.9, "4A", 1_000_100)
    first = refusal_rows([("P-b", "S-b", "not a coronary curved-MPR export")], 1_000_000)
    again = refusal_rows(
        [("P-b", "S-b", "a newer study of this patient is in the inbox")], 1_000_200
    )
    refusals = merged_refusals(merged_refusals(first.iloc[0:0], first), again)
    assert len(refusals) == 1  # one row per study: the latest look
    table = worklist_table(tmp_path, {"S-b": 999_000.0}, "prediction.json", refusals)
    assert table.patient.tolist() == ["P-a", "P-b"]
    assert table.status.tolist() == [
        "scored",
        "not scored: a newer study of this patient is in the inbox",
    ]
    assert table.significant_score.isna().tolist() == [False, True]  # nothing made up


def test_the_delivery_column_follows_the_newest_prediction(tmp_path):
    predicted(tmp_path, "P-a", True, 0.9, "4A", 1_000_100)
    document = tmp_path / "P-a" / "prediction.json"
    assert worklist_table(tmp_path, {}, "prediction.json").delivery.tolist() == [PENDING]
    record_delivery(document, FAILED, "PACS@10.0.0.5:104: connection refused after 3 tries")
    (row,) = worklist_table(tmp_path, {}, "prediction.json").to_dict("records")
    assert row["delivery"] == "failed: PACS@10.0.0.5:104: connection refused after 3 tries"
    record_delivery(document, DELIVERED, "to PACS@10.0.0.5:104")
    (row,) = worklist_table(tmp_path, {}, "prediction.json").to_dict("records")
    assert row["delivery"] == "delivered: to PACS@10.0.0.5:104"
    predicted(tmp_path / "again", "P-a", True, 0.8, "4A", 1_000_200)  # a newer prediction
    document.write_bytes((tmp_path / "again" / "P-a" / "prediction.json").read_bytes())
    (row,) = worklist_table(tmp_path, {}, "prediction.json").to_dict("records")
    assert row["delivery"] == PENDING  # the recorded outcome was the older prediction's

"""The reading room's worklist: referred first, then by significance score."""

import json
import os

from cass_pipeline.domain.prediction.worklist import WORKLIST_SCHEMA, worklist_table


def predicted(root, patient, refer, score, category, at):
    folder = root / patient
    folder.mkdir(parents=True)
    document = {
        "refer": refer,
        "significant_score": score,
        "cad_rads": category,
        "patient_class": "significant" if refer else "no_stenosis",
        "model": {"version": 4},
    }
    (folder / "prediction.json").write_text(json.dumps(document))
    os.utime(folder / "prediction.json", (at, at))


def test_referred_patients_come_first_then_the_highest_scores(tmp_path):
    predicted(tmp_path, "P-low", False, 0.10, "0", 1_000_100.4)
    predicted(tmp_path, "P-refer-low", True, 0.35, "2", 1_000_200)
    predicted(tmp_path, "P-high", False, 0.30, "1", 1_000_300)
    predicted(tmp_path, "P-refer-high", True, 0.90, "4A", 1_000_400)
    predicted(tmp_path, "P-none", None, None, None, 1_000_500)  # no usable view
    received = {"P-refer-high": 1_000_350.0, "P-low": 1_000_000.0}
    table = worklist_table(tmp_path, received, "prediction.json")
    assert list(table.columns) == WORKLIST_SCHEMA.names
    assert table.patient.tolist() == ["P-refer-high", "P-refer-low", "P-high", "P-low", "P-none"]
    assert table.turnaround_s.tolist()[0] == 50.0 and table.turnaround_s.isna().sum() == 3
    assert table.cad_rads.tolist()[:2] == ["4A", "2"] and table.model_version.iloc[0] == "4"
    assert worklist_table(tmp_path / "none", {}, "prediction.json").empty

"""The inbox scan: new studies wait until they are unchanged and quiet, and run once; a
patient's newest study is scored, any other is refused with the reason, and so is a study
that is no coronary curved-MPR export."""

import os
import time

import pydicom
from pydicom.data import get_testdata_file

from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.prediction.gate import export_problem
from cass_pipeline.domain.prediction.inbox import (
    COMPLETE_STAMP,
    chosen_study,
    scan_inbox,
    study_id,
)

HOUR = 3600


def pseudonym(name: str) -> str:
    return f"P-{name[::-1]}"


def write(folder, name, data=b"x", age_s=2 * HOUR):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    past = time.time() - age_s
    os.utime(path, (past, past))


def scan(inbox, memory, quiet_s=60, refusal=lambda folder: None):
    return scan_inbox(inbox, memory, pseudonym, time.time(), quiet_s, refusal)


def ready(result) -> list[str]:
    return [study.patient for study in result.ready]


def test_a_folder_runs_once_after_two_unchanged_looks(tmp_path):
    write(tmp_path / "55500011" / "LAD", "000.dcm")
    first = scan(tmp_path, {})
    assert ready(first) == [] and first.waiting == [study_id(tmp_path / "55500011", pseudonym)]
    second = scan(tmp_path, first.memory)
    assert ready(second) == ["P-11000555"]
    third = scan(tmp_path, second.memory)
    assert third.ready == [] and third.waiting == []
    assert "55500011" not in str(third.memory)  # folder names (maybe MRNs) are not kept


def test_a_folder_still_being_copied_waits(tmp_path):
    write(tmp_path / "A" / "LAD", "000.dcm")
    memory = scan(tmp_path, {}).memory
    write(tmp_path / "A" / "LAD", ".001.dcm.partial")  # rsync's staging file, old mtime kept
    changed = scan(tmp_path, memory)
    assert changed.ready == [] and len(changed.waiting) == 1
    assert ready(scan(tmp_path, changed.memory)) == ["P-A"]


def test_recent_files_wait_for_the_quiet_period(tmp_path):
    write(tmp_path / "B", "000.dcm", age_s=5)
    memory = scan(tmp_path, {}).memory
    assert scan(tmp_path, memory, quiet_s=60).ready == []
    assert ready(scan(tmp_path, memory, quiet_s=1)) == ["P-B"]


def test_an_updated_export_runs_again_and_hidden_or_empty_folders_never(tmp_path):
    write(tmp_path / "C", "000.dcm")
    write(tmp_path / ".staging" / "D", "000.dcm")
    (tmp_path / "E").mkdir()
    memory = scan(tmp_path, scan(tmp_path, {}).memory).memory
    assert list(memory["done"]) == [study_id(tmp_path / "C", pseudonym)]
    write(tmp_path / "C", "001.dcm")
    assert ready(scan(tmp_path, scan(tmp_path, memory).memory)) == ["P-C"]
    assert chosen_study(tmp_path, "P-C", pseudonym).folder == tmp_path / "C"
    assert chosen_study(tmp_path, "P-unknown", pseudonym) is None


def study(folder, patient_id, date, time_of_day="120000"):
    """A one-file DICOM study of `patient_id` on `date`, written an hour ago."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PatientID, dataset.StudyDate, dataset.StudyTime = patient_id, date, time_of_day
    dataset.StudyInstanceUID = pydicom.uid.generate_uid()
    folder.mkdir(parents=True)
    dataset.save_as(folder / "1.dcm")
    past = time.time() - HOUR
    os.utime(folder / "1.dcm", (past, past))


def test_a_patient_with_several_studies_is_scored_once_on_the_newest(tmp_path):
    study(tmp_path / "study-b", "MRN7", "20260301")
    study(tmp_path / "study-a", "MRN7", "20261105")  # sorts first, and is the newest
    study(tmp_path / "study-c", "MRN7", "20250101", "235959")
    first = scan(tmp_path, scan(tmp_path, {}).memory)
    assert [s.folder.name for s in first.ready] == ["study-a"]
    assert sorted(s.folder.name for s, _ in first.refused) == ["study-b", "study-c"]
    assert {reason for _, reason in first.refused} == {
        "a newer study of this patient is in the inbox"
    }
    later = first.memory
    for _ in range(3):  # every later sensor tick: nothing to do
        again = scan(tmp_path, later)
        assert again.ready == [] and again.refused == [] and again.waiting == []
        later = again.memory
    newest = study_id(tmp_path / "study-a", pseudonym)
    assert chosen_study(tmp_path, "P-7NRM", pseudonym).folder == tmp_path / "study-a"
    assert chosen_study(tmp_path, "P-7NRM", pseudonym, newest).folder == tmp_path / "study-a"
    older = study_id(tmp_path / "study-b", pseudonym)
    assert chosen_study(tmp_path, "P-7NRM", pseudonym, older).folder == tmp_path / "study-b"


def test_a_study_that_is_no_coronary_export_is_refused_once_with_the_reason(tmp_path):
    study(tmp_path / "study-head", "MRN8", "20261105")  # pydicom's CT: no branch series
    first = scan(tmp_path, scan(tmp_path, {}, refusal=coronary).memory, refusal=coronary)
    assert first.ready == []
    [(refused, reason)] = first.refused
    assert refused.patient == "P-8NRM"
    assert "not a coronary curved-MPR export" in reason and "MRN8" not in reason
    assert scan(tmp_path, first.memory, refusal=coronary).refused == []


def coronary(folder):
    return export_problem(folder, IngestConfig())


def test_a_folder_the_node_stamped_complete_is_ready_at_the_first_look(tmp_path):
    write(tmp_path / "study-1" / "LAD", "000.dcm", age_s=1)
    write(tmp_path / "study-1", COMPLETE_STAMP, age_s=0)
    assert ready(scan(tmp_path, {}, quiet_s=60)) == ["P-1-yduts"]
    write(tmp_path / "study-2" / "LAD", "000.dcm", age_s=0)  # a file newer than its stamp
    write(tmp_path / "study-2", COMPLETE_STAMP, age_s=5)
    assert ready(scan(tmp_path, {}, quiet_s=60)) == ["P-1-yduts"]

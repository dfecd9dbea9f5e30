"""The inbox scan: new folders wait until they are unchanged and quiet, and run once."""

import os
import time

from cass_pipeline.domain.prediction.inbox import folder_of, scan_inbox

HOUR = 3600


def pseudonym(name: str) -> str:
    return f"P-{name[::-1]}"


def write(folder, name, data=b"x", age_s=2 * HOUR):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    past = time.time() - age_s
    os.utime(path, (past, past))


def scan(inbox, memory, quiet_s=60):
    return scan_inbox(inbox, memory, pseudonym, time.time(), quiet_s)


def test_a_folder_runs_once_after_two_unchanged_looks(tmp_path):
    write(tmp_path / "55500011" / "LAD", "000.dcm")
    first = scan(tmp_path, {})
    assert first.ready == [] and first.waiting == ["P-11000555"]
    second = scan(tmp_path, first.memory)
    assert second.ready == ["P-11000555"]
    third = scan(tmp_path, second.memory)
    assert third.ready == [] and third.waiting == []
    assert "55500011" not in str(third.memory)  # folder names (maybe MRNs) are not kept


def test_a_folder_still_being_copied_waits(tmp_path):
    write(tmp_path / "A" / "LAD", "000.dcm")
    memory = scan(tmp_path, {}).memory
    write(tmp_path / "A" / "LAD", ".001.dcm.partial")  # rsync's staging file, old mtime kept
    changed = scan(tmp_path, memory)
    assert changed.ready == [] and changed.waiting == ["P-A"]
    assert scan(tmp_path, changed.memory).ready == ["P-A"]


def test_recent_files_wait_for_the_quiet_period(tmp_path):
    write(tmp_path / "B", "000.dcm", age_s=5)
    memory = scan(tmp_path, {}).memory
    assert scan(tmp_path, memory, quiet_s=60).ready == []
    assert scan(tmp_path, memory, quiet_s=1).ready == ["P-B"]


def test_an_updated_export_runs_again_and_hidden_or_empty_folders_never(tmp_path):
    write(tmp_path / "C", "000.dcm")
    write(tmp_path / ".staging" / "D", "000.dcm")
    (tmp_path / "E").mkdir()
    memory = scan(tmp_path, scan(tmp_path, {}).memory).memory
    assert list(memory["done"]) == ["P-C"]
    write(tmp_path / "C", "001.dcm")
    assert scan(tmp_path, scan(tmp_path, memory).memory).ready == ["P-C"]
    assert folder_of(tmp_path, "P-C", pseudonym) == tmp_path / "C"
    assert folder_of(tmp_path, "P-unknown", pseudonym) is None

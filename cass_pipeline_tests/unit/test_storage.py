"""Atomic writes: a writer killed mid-write leaves a temporary that the next write removes;
one writer per folder at a time, readers beside each other; files others can read."""

import os
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pytest

from cass_pipeline.domain.storage import (
    FILE_MODE_VARIABLE,
    WRITER_LOCK,
    WriterBusyError,
    exclusive_writer,
    shared_reader,
    write_parquet_atomic,
    write_text_atomic,
)

SCHEMA = pa.schema([("patient_id", pa.string())])
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import pyarrow as pa
from cass_pipeline.domain.storage import parquet_stream
schema = pa.schema([("patient_id", pa.string())])
with parquet_stream(Path(sys.argv[1]), schema) as writer:
    writer.write_table(pa.Table.from_pylist([{"patient_id": "P1"}], schema))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "manifest.parquet"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=120)
    assert killed.returncode == -9
    (orphan,) = tmp_path.glob(".manifest.parquet.*.tmp")
    assert not target.exists()
    live = tmp_path / f".manifest.parquet.{os.getpid()}.abc123.tmp"  # a writer still at work
    live.write_bytes(b"")
    write_parquet_atomic(pa.Table.from_pylist([{"patient_id": "P2"}], SCHEMA), target, SCHEMA)
    assert target.exists() and not orphan.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])


def test_one_writer_at_a_time_the_other_waits_then_gives_up_clearly(tmp_path):
    import threading

    order = []

    heard = []
    with exclusive_writer(tmp_path):
        busy = pytest.raises(WriterBusyError, match=rf"process {os.getpid()} on .*gave up")
        with busy, exclusive_writer(tmp_path, wait_seconds=0.3, notify=heard.append):
            pass
        assert len(heard) == 1 and "waiting up to 0 s" in heard[0]
        release = threading.Event()

        def second_writer():
            with exclusive_writer(tmp_path, wait_seconds=30, notify=heard.append):
                order.append("second")
            release.set()

        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.5)
        order.append("first done")
    assert release.wait(10)
    thread.join()
    assert order == ["first done", "second"]


def test_a_killed_writer_releases_its_folder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from cass_pipeline.domain.storage import exclusive_writer\n"
            f"with exclusive_writer(Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with exclusive_writer(tmp_path, wait_seconds=2):
        pass


def test_readers_share_a_folder_and_a_writer_waits_for_them_naming_them(tmp_path):
    heard = []
    with shared_reader(tmp_path), shared_reader(tmp_path, wait_seconds=0.3):
        busy = pytest.raises(WriterBusyError, match=rf"process {os.getpid()} on .*reading")
        with busy, exclusive_writer(tmp_path, wait_seconds=0.3, notify=heard.append):
            pass
    assert "reading" in heard[0]
    with exclusive_writer(tmp_path):
        busy = pytest.raises(WriterBusyError, match=r"writing.*gave up")
        with busy, shared_reader(tmp_path, wait_seconds=0.3):
            pass
    with exclusive_writer(tmp_path, wait_seconds=0.3):  # every holder is gone
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [WRITER_LOCK]


def test_a_reader_of_a_folder_not_there_yet_creates_nothing(tmp_path):
    missing = tmp_path / "not-yet"
    with shared_reader(missing):
        assert not missing.exists()  # a reader creates nothing


@pytest.mark.parametrize(
    ("mask", "setting", "expected"),
    [(0o022, None, 0o644), (0o027, None, 0o640), (0o022, "0600", 0o600)],
)
def test_written_files_follow_the_umask_or_the_stricter_setting(
    tmp_path, monkeypatch, mask, setting, expected
):
    if setting:
        monkeypatch.setenv(FILE_MODE_VARIABLE, setting)
    previous = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        write_parquet_atomic(
            pd.DataFrame({"x": [1]}), tmp_path / "t.parquet", pa.schema([("x", pa.int64())])
        )
    finally:
        os.umask(previous)
    for name in ("a.json", "t.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected

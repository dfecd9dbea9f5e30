"""Atomic writes: a writer killed mid-write leaves a temporary that the next write removes."""

import os
import subprocess
import sys

import pyarrow as pa

from cass_pipeline.domain.storage import write_parquet_atomic

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

"""Nothing half-written: atomic file writes and Parquet tables with declared schemas."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: The lock file of a folder's writer (`exclusive_writer`); it names the holder.
WRITER_LOCK = ".writer.lock"


class WriterBusyError(RuntimeError):
    """Another process kept writing the same folder for longer than we were willing to wait."""


@contextmanager
def exclusive_writer(
    folder: Path, wait_seconds: float = 600.0, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Be the only writer of `folder` (an flock, released by the kernel if the holder dies):
    wait up to `wait_seconds` for the current one, telling `notify` once, then give up."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / WRITER_LOCK
    with open(lock, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock.read_text().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise WriterBusyError(
                        f"{folder} is being written by {holder}; gave up after waiting "
                        f"{wait_seconds:.0f} s. Let that run finish (or stop it), then run again."
                    ) from None
                if notify and not told:
                    notify(f"waiting up to {wait_seconds:.0f} s for {holder}, writing {folder}")
                    told = True
                time.sleep(0.2)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} since {since}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_temporaries(path: Path, suffix: str) -> None:
    """Temporaries of `path` whose writer died before renaming (a `kill -9`): their names
    carry the writer's process id; a live writer's temporary is left alone."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds; temporaries
    that killed writers left behind are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    """Cast to the declared schema (failing on mismatch) and write atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    table = table.select(schema.names).cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


@contextmanager
def parquet_stream(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temporary file, renamed into place when the block succeeds."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield writer


def settings_hash(settings: dict, extra: bytes = b"") -> str:
    """16 hex digits of SHA-256 over settings as key-sorted JSON (and optional extra bytes):
    the fingerprint recorded with outputs so that a change of settings is noticed."""
    payload = json.dumps(settings, sort_keys=True).encode() + extra
    return hashlib.sha256(payload).hexdigest()[:16]

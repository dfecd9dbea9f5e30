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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lock and file helpers are used where pandas is not (`cass --help`)
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

#: The lock file of a folder's readers and writer (`folder_lock`); beside it, one file per
#: holder names it.
WRITER_LOCK = ".writer.lock"
#: A file mode stricter than the umask gives, for every file CASS writes (`output_mode`).
FILE_MODE_VARIABLE = "CASS_FILE_MODE"


class WriterBusyError(RuntimeError):
    """Another process kept writing the same folder for longer than we were willing to wait."""


@contextmanager
def exclusive_writer(
    folder: Path, wait_seconds: float = 600.0, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Be the only writer of `folder`, and no reader of it (`folder_lock`)."""
    with folder_lock(folder, shared=False, wait_seconds=wait_seconds, notify=notify):
        yield


@contextmanager
def shared_reader(
    folder: Path, wait_seconds: float = 600.0, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Read `folder` beside other readers while no writer holds it (`folder_lock`)."""
    with folder_lock(folder, shared=True, wait_seconds=wait_seconds, notify=notify):
        yield


def holder_notes(lock: Path) -> list[tuple[int, Path]]:
    """The files the holders of `lock` leave beside it (`<lock>.<pid>.<holder>`), with the
    process id of each."""
    notes = []
    for note in lock.parent.glob(f"{glob.escape(lock.name)}.*"):
        pid = note.name[len(lock.name) + 1 :].split(".")[0]
        if pid.isdigit():
            notes.append((int(pid), note))
    return sorted(notes)


def lock_holders(lock: Path) -> str:
    """Who holds `lock` ("process 12 on host since ..., reading"), from the notes of holders
    still alive."""
    names = []
    for pid, note in holder_notes(lock):
        try:
            if process_alive(pid):
                names.append(note.read_text().strip())
        except OSError:
            continue
    return "; ".join(names) or "another process"


def open_lock(path: Path) -> int | None:
    """A descriptor on lock file `path`, created when missing, read-only where this account
    may not write (an flock works on either); None when it cannot be opened (its folder is
    gone, or lacks it and may not be written)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        with suppress(FileNotFoundError, PermissionError):
            return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        pass
    return None


@contextmanager
def folder_lock(
    folder: Path,
    shared: bool,
    wait_seconds: float = 600.0,
    notify: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold `folder`'s lock (an flock on `WRITER_LOCK`, released by the kernel if the holder
    dies), shared by readers or exclusive for one writer: wait up to `wait_seconds` for the
    holders, telling `notify` once who they are, then give up. A reader of a folder it may not
    write (a read-only export) uses the lock file when there is one and reads unlocked else."""
    lock = folder / WRITER_LOCK
    if not shared:
        folder.mkdir(parents=True, exist_ok=True)
    fd = open_lock(lock)
    if fd is None:
        if not shared:
            raise PermissionError(f"{folder}: this account may not write it")
        yield  # a folder not there yet, or a read-only export nobody locks: read it as it is
        return
    mode, doing = (fcntl.LOCK_SH, "reading") if shared else (fcntl.LOCK_EX, "writing")
    note = lock.with_name(f"{lock.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    with os.fdopen(fd, "rb"):
        deadline = time.monotonic() + wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock_holders(lock)
                if time.monotonic() >= deadline:
                    raise WriterBusyError(
                        f"{folder} is held by {holder}; gave up after waiting "
                        f"{wait_seconds:.0f} s. Let that run finish (or stop it), then run again."
                    ) from None
                if notify and not told:
                    intent = "read" if shared else "write"
                    notify(
                        f"waiting up to {wait_seconds:.0f} s to {intent} {folder}, held by {holder}"
                    )
                    told = True
                time.sleep(0.2)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        try:
            for pid, dead in holder_notes(lock):
                if not process_alive(pid):
                    dead.unlink(missing_ok=True)
            write_text_atomic(
                note, f"process {os.getpid()} on {socket.gethostname()} since {since}, {doing}"
            )
        except OSError:  # a folder we may only read
            note = None
        try:
            yield
        finally:
            if note is not None:
                note.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)


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


def umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def output_mode() -> int:
    """The mode of every file CASS writes: 0666 less the umask (0644 under 022), or the
    stricter `CASS_FILE_MODE` (octal, e.g. 0640) where a site sets one."""
    mode = 0o666
    if os.environ.get(FILE_MODE_VARIABLE):
        mode = int(os.environ[FILE_MODE_VARIABLE], 8) & 0o666
    return mode & ~umask()


#: The mode of identifiable files on the key holder's side (received DICOM, results that go
#: back to the hospital), whatever the umask; their folders get `PRIVATE_FOLDER`.
PRIVATE, PRIVATE_FOLDER = 0o600, 0o700


def private_folder(folder: Path) -> Path:
    """`folder` and its missing parents created owner-only (0700 whatever the umask)."""
    if not folder.is_dir():
        private_folder(folder.parent)
        folder.mkdir(exist_ok=True)
        os.chmod(folder, PRIVATE_FOLDER)
    return folder


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp", private: bool = False) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds; temporaries
    that killed writers left behind are removed first. `private`: owner-only (`PRIVATE`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix
    )
    os.fchmod(fd, PRIVATE if private else output_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_bytes_atomic(path: Path, data: bytes, private: bool = False) -> None:
    with atomic_path(path, private=private) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str, private: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), private)


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    """Cast to the declared schema (failing on mismatch) and write atomically."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    table = table.select(schema.names).cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_yaml(path: Path, max_bytes: int = 1 << 20):
    """A YAML file that people write (settings, reviews): at most `max_bytes`, and without
    anchors or aliases, so that a small file cannot expand into gigabytes (an alias bomb)."""
    import yaml

    class PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases are not allowed", mark)
            return super().compose_node(parent, index)

    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path.name} is over {max_bytes} bytes")
    return yaml.load(path.read_text(encoding="utf-8"), Loader=PlainLoader)


def read_parquet_or_empty(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """A table written with `schema`, or an empty one of its columns while there is none."""
    import pandas as pd

    if not path.is_file():
        return schema.empty_table().to_pandas()
    return pd.read_parquet(path)


@contextmanager
def parquet_stream(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temporary file, renamed into place when the block succeeds."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield writer


def settings_hash(settings: dict, extra: bytes = b"") -> str:
    """16 hex digits of SHA-256 over settings as key-sorted JSON (and optional extra bytes):
    the fingerprint recorded with outputs so that a change of settings is noticed."""
    payload = json.dumps(settings, sort_keys=True).encode() + extra
    return hashlib.sha256(payload).hexdigest()[:16]

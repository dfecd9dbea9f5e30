"""The files of an export folder as this account sees them: what it can read, and what it
cannot (a folder it may not list, a file it may not open), each with a reason to act on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Listing:
    """Readable files under a folder, sorted, hidden ones left out; the paths that could not
    be read, with why."""

    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def unreadable_reason(path: Path, error: OSError | None = None) -> str:
    """Why this account cannot read `path`, with its mode and owner, and what to do."""
    what = "folder cannot be listed" if path.is_dir() else "file cannot be read"
    cause = (error.strerror or str(error)).lower() if error else "permission denied"
    try:
        stat = path.stat()
        owner = f"; mode {stat.st_mode & 0o777:04o}, owner uid {stat.st_uid}"
    except OSError:
        owner = ""
    return (
        f"{what} by this account (uid {os.getuid()}: {cause}{owner}); make it readable "
        "(chmod, or the export's group), then run again"
    )


def list_files(root: Path) -> Listing:
    """Every non-hidden file below `root`; folders it may not enter and files it may not open
    are listed as unreadable rather than skipped."""
    files, unreadable = [], []

    def refused(error: OSError) -> None:
        path = Path(error.filename)
        if path != root or root.exists():
            unreadable.append((path, unreadable_reason(path, error)))

    for folder, subfolders, names in os.walk(root, onerror=refused):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or not path.is_file():
                continue
            if os.access(path, os.R_OK):
                files.append(path)
            else:
                unreadable.append((path, unreadable_reason(path)))
    return Listing(sorted(files), sorted(unreadable))

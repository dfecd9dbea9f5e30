"""Whether an inbox folder is a coronary curved-MPR export CASS may answer for, decided from
file names and DICOM headers before any run starts: a head CT or a bone scan is refused
with a reason, gets no run and no result, and shows on the worklist as "not scored"."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cass_pipeline.domain.cohort.headers import is_bitmap_file, read_header, tag
from cass_pipeline.domain.cohort.listing import list_files
from cass_pipeline.domain.imaging.config import IngestConfig

#: The size a curved-MPR view has (pixels per side); thumbnails and scout strips fall out.
MIN_SIDE, MAX_SIDE = 64, 4096
#: Modalities a curved-MPR export comes as (CT, a secondary capture, or none for bitmaps).
EXPORT_MODALITIES = {"CT", "OT", "SC", ""}


def export_problem(folder: Path, config: IngestConfig) -> str | None:
    """Why `folder` is not a coronary curved-MPR export (no identifier, no series name
    quoted: they may hold one), or None when it is: at least one series named for a coronary
    branch, with `config.min_views` views of a curved MPR's size."""
    views: Counter[str] = Counter()
    unnamed = odd_size = foreign = 0
    for path in list_files(folder).files:
        series_folder = path.parent.relative_to(folder).as_posix()
        if is_bitmap_file(path):
            branch = config.branch_of_series(None, Path(series_folder).name)
            frames = 1
        else:
            header = read_header(path)
            if header is None or "StudyInstanceUID" not in header:
                continue
            if (tag(header, "Modality") or "") not in EXPORT_MODALITIES:
                foreign += 1
                continue
            rows, columns = header.get("Rows"), header.get("Columns")
            if rows is not None and not all(
                MIN_SIDE <= int(side) <= MAX_SIDE for side in (rows, columns or 0)
            ):
                odd_size += 1
                continue
            name = tag(header, "SeriesDescription")
            branch = config.branch_of_series(name, Path(series_folder).name)
            frames = int(header.get("NumberOfFrames") or 1)
        if branch is None:
            unnamed += 1
            continue
        views[branch] += frames
    enough = [b for b, n in views.items() if n >= config.min_views]
    if enough:
        return None
    if views:
        counts = ", ".join(f"{b}: {n}" for b, n in sorted(views.items()))
        return (
            f"no coronary branch has {config.min_views} views ({counts}): not a complete "
            "curved-MPR export"
        )
    seen = []
    if foreign:
        seen.append(f"{foreign} images of another modality than CT")
    if odd_size:
        seen.append(f"{odd_size} images outside {MIN_SIDE}-{MAX_SIDE} px")
    if unnamed:
        seen.append(f"{unnamed} images of series not named for a coronary branch")
    found = "; ".join(seen) or "no image"
    return f"not a coronary curved-MPR export ({found})"

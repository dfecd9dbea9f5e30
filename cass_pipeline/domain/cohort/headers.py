"""What a raw file says about itself before it is decoded: bitmap or DICOM, and the DICOM
header tags the index groups files by (read without the pixel data)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
BITMAP_SIGNATURES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


def image_suffix(data: bytes, suffix: str) -> str:
    """The suffix that says how to decode `data`: a bitmap suffix as given, else the PNG or
    JPEG signature of the bytes, else '.dcm' (DICOM files often have no extension)."""
    suffix = suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return suffix
    return next((s for magic, s in BITMAP_SIGNATURES.items() if data.startswith(magic)), ".dcm")


def is_bitmap(head: bytes, suffix: str) -> bool:
    """Whether a file with these first bytes and suffix is read as PNG/JPEG (else DICOM)."""
    return image_suffix(head, suffix) in IMAGE_SUFFIXES


def with_preamble(data: bytes) -> bytes:
    """A meta header written without its 128-byte preamble gets one (pydicom needs it)."""
    return bytes(128) + data if data[:4] == b"DICM" else data


HEADER_TAGS = [
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "Modality",
    "Rows",
    "Columns",
    "InstanceNumber",
    "MediaStorageSOPClassUID",
    "NumberOfFrames",
]
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def is_bitmap_file(path: Path) -> bool:
    """Whether ingestion reads this file as PNG/JPEG (by suffix or signature), not DICOM."""
    with path.open("rb") as handle:
        return is_bitmap(handle.read(8), path.suffix)


def read_header(path: Path) -> pydicom.Dataset | None:
    """The header tags the index needs, read without the pixel data (None if unreadable)."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) == b"DICM":  # no preamble: pydicom needs one, read it all
                source = io.BytesIO(with_preamble(b"DICM" + handle.read()))
            else:
                handle.seek(0)
                source = handle
            return pydicom.dcmread(
                source, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True
            )
    except Exception:
        return None


def tag(ds: pydicom.Dataset, name: str) -> str | None:
    value = str(ds.get(name, "") or "").strip()
    return value or None

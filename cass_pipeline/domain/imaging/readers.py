"""Read MPR views from DICOM (any transfer syntax with a decoder installed), PNG or JPEG."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from cass_pipeline.domain.cohort.headers import IMAGE_SUFFIXES, image_suffix, with_preamble
from cass_pipeline.domain.cohort.index import NO_PATIENT
from cass_pipeline.domain.cohort.report_sources import IndexReject
from cass_pipeline.domain.imaging.cleanup import OverlayHints, colour_overlay

MIN_SIDE = 32


class ImageReadError(Exception):
    """An input file that cannot give an image; the message is the reject reason."""


@dataclass
class SourceImage:
    """Frames of one file as 8-bit grey images, with what the file says about itself."""

    frames: list[np.ndarray]
    kind: str
    series_description: str | None = None
    series_uid: str | None = None
    instance_number: int | None = None
    content_time: str = ""
    #: Per frame, the pixels a colour frame marks as overlay (`colour_overlay`), or None.
    overlays: list[np.ndarray | None] = field(default_factory=list)
    #: The patient identifiers its header states (`dataset_identifiers`), held in memory only.
    identifiers: frozenset[str] = frozenset()
    #: Whether the pixels were compressed lossily (JPEG, lossy JPEG 2000 or JPEG-LS).
    lossy: bool = False

    def hints(self, index: int, persistent: np.ndarray | None = None) -> OverlayHints:
        """What the cleanup of frame `index` is told of its overlay (with what its series
        shows in the same place, where known)."""
        colour = self.overlays[index] if index < len(self.overlays) else None
        if persistent is not None and persistent.shape != self.frames[index].shape:
            persistent = None
        return OverlayHints(colour, self.lossy, persistent)


def to_uint8(pixels: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit grey: uint8 kept as is; otherwise the window (centre, width) or the 0.5-99.5
    percentile range mapped to 0..255."""
    if pixels.dtype == np.uint8 and window is None:
        return pixels
    values = pixels.astype(np.float32)
    if window is not None:
        centre, width = window
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        high = low + 1
    return np.round(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def grey(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return frame


def first_value(value) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def parse_dicom(data: bytes) -> pydicom.Dataset:
    """A dataset from bytes; files without the 128-byte preamble and meta header are accepted
    when they hold pixel data."""
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    data = with_preamble(data)
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as error:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:
            ds = None
        if ds is None or "PixelData" not in ds or "Rows" not in ds:
            raise ImageReadError(
                f"not a DICOM file ({len(data)} bytes without a DICOM header)"
            ) from error
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
        return ds
    except Exception as error:  # pydicom raises many types on damaged files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"damaged DICOM file ({len(data)} bytes): {reason}") from error


def is_image_storage(sop_class: str | None) -> bool:
    """Whether a SOP class stores images (an unknown one is assumed to)."""
    if not sop_class:
        return True
    name = pydicom.uid.UID(sop_class).name
    return "Image" in name or name == sop_class


def expected_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """The size of uncompressed pixel data from the image header (None when compressed)."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        return None
    try:
        return (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.get("SamplesPerPixel", 1))
            * (int(ds.BitsAllocated) // 8)
        )
    except (AttributeError, TypeError, ValueError):
        return None


#: Transfer syntaxes whose pixel data may have been compressed lossily.
LOSSY_SYNTAXES = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, HTJ2K}


def is_lossy(ds: pydicom.Dataset) -> bool:
    """Whether the pixel data were compressed lossily: by the transfer syntax, or as the
    dataset states (Lossy Image Compression "01", also after a later decompression)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return syntax in LOSSY_SYNTAXES or str(ds.get("LossyImageCompression", "")) == "01"


def read_dicom(data: bytes) -> SourceImage:
    ds = parse_dicom(data)
    if "PixelData" not in ds:
        sop_class = ds.get("SOPClassUID")
        if "Rows" in ds or is_image_storage(sop_class):
            raise ImageReadError(f"truncated DICOM file ({len(data)} bytes): no pixel data")
        name = pydicom.uid.UID(sop_class).name
        raise ImageReadError(f"DICOM file without an image ({name})")
    expected = expected_pixel_bytes(ds)
    if expected and len(ds.PixelData) < expected:
        raise ImageReadError(
            f"truncated DICOM file: {len(ds.PixelData)} of {expected} bytes of pixel data"
        )
    try:
        pixels = ds.pixel_array
    except Exception as error:
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        reason = str(error).splitlines()[0].rstrip(":")
        raise ImageReadError(f"cannot decode pixel data ({name}): {reason}") from error
    frames_count = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = list(pixels) if frames_count > 1 else [pixels]
    slope, intercept = (
        float(ds.get("RescaleSlope", 1) or 1),
        float(ds.get("RescaleIntercept", 0) or 0),
    )
    window = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        window = (first_value(ds.WindowCenter), first_value(ds.WindowWidth))
    palette = ds.get("PhotometricInterpretation", "") == "PALETTE COLOR"
    out, overlays = [], []
    for frame in frames:
        if palette:
            rgb = apply_color_lut(frame, ds)
            frame = (rgb // 257 if rgb.max() > 255 else rgb).astype(np.uint8)
        overlays.append(colour_overlay(frame))
        if samples > 1 or palette:
            frame = grey(frame.astype(np.uint8) if frame.dtype != np.uint8 else frame)
        elif (slope, intercept) != (1.0, 0.0):
            frame = frame.astype(np.float32) * slope + intercept
        frame = to_uint8(frame, window if samples == 1 and not palette else None)
        if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
            frame = 255 - frame
        out.append(frame)
    instance = ds.get("InstanceNumber")
    return SourceImage(
        out,
        "dicom",
        str(ds.get("SeriesDescription", "")) or None,
        str(ds.get("SeriesInstanceUID", "")) or None,
        int(instance) if instance not in (None, "") else None,
        f"{ds.get('ContentDate', '') or ''}{ds.get('ContentTime', '') or ''}",
        overlays,
        frozenset(dataset_identifiers(ds)),
        is_lossy(ds),
    )


def read_bitmap(data: bytes, suffix: str) -> SourceImage:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"not a decodable {suffix.lstrip('.').upper()} image")
    kind = "jpeg" if suffix in {".jpg", ".jpeg"} else "png"
    return SourceImage(
        [to_uint8(grey(image))], kind, overlays=[colour_overlay(image)], lossy=kind == "jpeg"
    )


def read_image(data: bytes, suffix: str = "") -> SourceImage:
    """Frames of a file by its suffix or, without a bitmap suffix, its signature (else DICOM),
    each checked for shape."""
    suffix = image_suffix(data, suffix)
    source = read_bitmap(data, suffix) if suffix in IMAGE_SUFFIXES else read_dicom(data)
    for frame in source.frames:
        if frame.ndim != 2:
            raise ImageReadError(f"wrong dimensions {frame.shape}: expected a 2D grey image")
        if min(frame.shape) < MIN_SIDE:
            raise ImageReadError(f"image too small: {frame.shape[0]}x{frame.shape[1]} px")
    return source


def check_frame(frame: np.ndarray) -> None:
    """A frame that holds no picture (one grey level) cannot be classified."""
    if int(frame.max()) == int(frame.min()):
        raise ImageReadError(f"constant image (value {frame.min()})")


def file_problem(path: Path) -> str | None:
    """Why ingestion would reject a file: the reader's or the frame check's reason."""
    try:
        image = read_image(path.read_bytes(), path.suffix)
        for frame in image.frames:
            check_frame(frame)
    except (ImageReadError, OSError) as error:
        return str(error)
    return None


def set_aside_reason(reject: IndexReject) -> str:
    """Why the index set a file aside; for a file it could not place, the reader's reason
    when the file is unreadable."""
    return (
        (file_problem(reject.path) or reject.reason)
        if reject.reason == NO_PATIENT
        else reject.reason
    )


def frame_of(image: SourceImage, index: int) -> np.ndarray:
    """Frame `index` of a file, checked as ingestion checks every frame."""
    if not 0 <= index < len(image.frames):
        raise ImageReadError(f"no frame {index}: the file has {len(image.frames)} frame(s)")
    check_frame(image.frames[index])
    return image.frames[index]


def dicom_identifiers(path) -> set[str]:
    """Patient identifiers in a DICOM header, read without pixel data, for checking that none
    reaches an output."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return set()
    return dataset_identifiers(ds)


def dataset_identifiers(ds: pydicom.Dataset) -> set[str]:
    """Patient identifiers in a dataset: name parts, id, other ids, birth date (as written
    in three styles), accession."""
    values = {
        str(ds.get(tag, "") or "")
        for tag in ("PatientID", "AccessionNumber", "PatientBirthDate", "OtherPatientIDs")
    }
    name = str(ds.get("PatientName", "") or "")
    values |= {name, *name.replace("^", " ").split()}
    birth = str(ds.get("PatientBirthDate", "") or "")
    if len(birth) == 8:
        values |= {
            f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
            f"{birth[6:]}.{birth[4:6]}.{birth[:4]}",
            f"{birth[4:6]}/{birth[6:]}/{birth[:4]}",
        }
    return {v for v in values if len(v) >= 2}

"""Workstation-style export of CPR views: CT window to 8 bits, burned-in text, DICOM or PNG;
grey with white text, RGB with the overlay in colour, or as other workstations and PACS
write them (`EXPORT STYLES` in docs/synthetic.md): CT values with a rescale and a window,
MONOCHROME1, one multi-frame file per series, JPEG, JPEG 2000 and JPEG-LS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSNearLossless,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cass_pipeline.domain.imaging.cleanup import DEFAULT_WINDOW_HU, ct_window_to_uint8
from cass_pipeline.domain.storage import atomic_path, write_bytes_atomic

#: Image content tops out below the text level, as on the workstations the paper used.
CONTENT_MAX = 250
TEXT_LEVEL = 255
#: The overlay colour of an RGB export (yellow, 226 in grey: below the text level).
OVERLAY_RGB = (255, 255, 0)
#: The level of a grey export's overlay drawn in grey (`grey_overlay`), below the text level.
GREY_OVERLAY_LEVEL = 200
#: A narrow window that saturates contrast and calcium at 255, as some workstations export.
SATURATING_WINDOW_HU = (-100.0, 320.0)  # contrast (350-480 HU) and calcium reach 255
UID_ROOT = "1.2.826.0.1.3680043.10.1137."
#: A CT export: 12-bit stored values, HU = stored - 1024, the text at the top of the range,
#: and a stored window that the reader maps to the grey export's levels (700 HU -> 250).
CT_INTERCEPT = -1024.0
CT_MAX_STORED = 4095
CT_WINDOW_LOW, CT_WINDOW_HIGH = (
    DEFAULT_WINDOW_HU[0],
    DEFAULT_WINDOW_HU[0] + (DEFAULT_WINDOW_HU[1] - DEFAULT_WINDOW_HU[0]) * 255 / CONTENT_MAX,
)
#: Lossy settings as PACS use them: JPEG quality, JPEG 2000 compression ratio, JPEG-LS error.
JPEG_QUALITY = 90
J2K_RATIO = 10
JPEGLS_ERROR = 2

SERIES_NAMES = {
    "LM": "LM",
    "LAD": "LAD",
    "D-1": "LAD-D1",
    "D-2": "LAD-D2",
    "D-3": "LAD-D3",
    "LCX": "LCX",
    "OM-1": "LCX-OM1",
    "OM-2": "LCX-OM2",
    "OM-3": "LCX-OM3",
    "RI": "RI",
    "PDA-LCX": "LCX-PDA",
    "PLV-LCX": "LCX-PLB1",
    "RCA": "RCA",
    "PDA-RCA": "RCA-PDA",
    "PLV-RCA": "RCA-PLB1",
}
SERIES_SUFFIXES = (" *", " original", "")


@dataclass(frozen=True)
class Identity:
    """Who the synthetic patient is: what de-identification downstream must remove."""

    family_name: str
    given_name: str
    sex: str
    birth_date: str  # YYYYMMDD
    mrn: str
    accession: str
    exam_date: str  # YYYYMMDD


def series_description(branch: str, suffix: str, lowercase: bool) -> str:
    """Vendor-style series name: 'LAD *', 'LCX-OM1 original', 'RCA-PLB1'."""
    name = SERIES_NAMES[branch] + suffix
    return name.lower() if lowercase else name


def series_folder(description: str) -> str:
    """A folder name for a series: the description without '*' and with '_' for spaces."""
    return "_".join(description.replace("*", " ").split())


def window_to_uint8(hu: np.ndarray, saturating: bool = False) -> np.ndarray:
    """CT window to 0..CONTENT_MAX, below the level of the burned-in text; or the saturating
    window to 0..255."""
    if saturating:
        return ct_window_to_uint8(hu, SATURATING_WINDOW_HU, 255)
    return ct_window_to_uint8(hu, DEFAULT_WINDOW_HU, CONTENT_MAX)


def ct_stored(hu: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """12-bit stored CT values of a view in HU, the overlay at the top of the range."""
    stored = np.clip(np.round(hu - CT_INTERCEPT), 0, CT_MAX_STORED).astype(np.uint16)
    stored[overlay] = CT_MAX_STORED
    return stored


def in_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An RGB secondary capture of the grey view with the overlay `mask` in colour."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[mask] = OVERLAY_RGB
    return rgb


def text_overlay(
    shape: tuple[int, int], lines_top: list[str], line_bottom: str, mm_per_col: float
) -> np.ndarray:
    """Where the workstation draws its text and 10 mm scale bar (a boolean mask)."""
    mask = np.zeros(shape, np.uint8)
    size, width = shape
    scale = max(0.25, size / 700)
    thickness = max(1, size // 256)
    step = max(9, int(26 * scale))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, text in enumerate(lines_top):
        cv2.putText(mask, text, (3, step * (i + 1)), font, scale, 255, thickness, cv2.LINE_8)
    cv2.putText(mask, line_bottom, (3, size - 4), font, scale, 255, thickness, cv2.LINE_8)
    bar = max(4, round(10.0 / mm_per_col))
    right, y = width - 4, size - max(6, size // 24)
    cv2.line(mask, (right - bar, y), (right, y), 255, thickness)
    for x in (right - bar, right):
        cv2.line(mask, (x, y - max(2, size // 64)), (x, y), 255, thickness)
    cv2.putText(
        mask,
        "10mm",
        (right - bar, y - max(3, size // 40)),
        font,
        scale * 0.8,
        255,
        thickness,
        cv2.LINE_8,
    )
    # Some OpenCV builds anti-alias every glyph; workstation overlays are one level.
    return mask >= 128


def deterministic_uid(*parts: object) -> str:
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def write_dicom(
    path: Path,
    frames: np.ndarray,
    identity: Identity,
    description: str,
    series_number: int,
    view_index: int,
    angle_deg: float,
    pixel_spacing_mm: tuple[float, float],
    study_key: str,
    style: str = "grey",
) -> None:
    """One instance of a series: 8-bit Secondary Capture (grey, RGB, MONOCHROME1, or
    compressed by the style's transfer syntax), a multi-frame one of a whole series (`frames`
    stacked), or CT Image Storage of stored values (`ct_stored`); UIDs derive from the
    content keys."""
    multiframe = style == "multiframe"
    sop_class = (
        CTImageStorage
        if style == "ct_16bit"
        else MultiFrameGrayscaleByteSecondaryCaptureImageStorage
        if multiframe
        else SecondaryCaptureImageStorage
    )
    sop_uid = deterministic_uid(study_key, description, view_index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = deterministic_uid(study_key)
    ds.SeriesInstanceUID = deterministic_uid(study_key, description)
    ds.PatientName = f"{identity.family_name}^{identity.given_name}"
    ds.PatientID = identity.mrn
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.AccessionNumber = identity.accession
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.exam_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT" if style == "ct_16bit" else "OT"
    ds.BodyPartExamined = "HEART"  # unpaired: no Laterality
    ds.PatientOrientation = ""  # a curved MPR has no patient orientation
    if style == "ct_16bit":
        ct_modules(ds, study_key, view_index)
    else:
        ds.ConversionType = "WSD"
    ds.Manufacturer = "CASS synthetic workstation"
    ds.BurnedInAnnotation = "YES"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = view_index
    ds.ImageComments = (
        f"curved MPR, {len(frames)} rotations"
        if multiframe
        else f"curved MPR, rotation {angle_deg:.1f} deg"
    )
    ds.PixelSpacing = [f"{pixel_spacing_mm[0]:.4f}", f"{pixel_spacing_mm[1]:.4f}"]
    pixel_module(ds, frames if multiframe else frames[0], style)
    with atomic_path(path) as tmp:
        dcmwrite(tmp, ds, enforce_file_format=True)


#: The tag the frames of a multi-frame export are labelled by (Frame Label Vector).
FRAME_LABEL_VECTOR = 0x00182002


def ct_modules(ds: Dataset, study_key: str, view_index: int) -> None:
    """What a CT Image (as a workstation saves a curved reformat) carries beyond a secondary
    capture: image type, frame of reference, image plane, acquisition (dciodvfy-clean)."""
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.FrameOfReferenceUID = deterministic_uid(study_key, "frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, view_index]
    ds.SliceThickness = ""
    ds.KVP = ""
    ds.AcquisitionNumber = ""


def pixel_module(ds: Dataset, pixels: np.ndarray, style: str) -> None:
    """The image pixel attributes and data of `pixels` (a view, RGB view or stack of views)
    as the style stores them."""
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = (
        "RGB" if rgb else "MONOCHROME1" if style == "monochrome1" else "MONOCHROME2"
    )
    if rgb:
        ds.PlanarConfiguration = 0
    if style == "multiframe":
        ds.NumberOfFrames = len(pixels)
        if len(pixels) > 1:
            ds.FrameIncrementPointer = FRAME_LABEL_VECTOR
            ds.FrameLabelVector = [f"rotation {i + 1}" for i in range(len(pixels))]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "IDENTITY"
    if style == "ct_16bit":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1.0, "HU"
        ds.WindowCenter = f"{(CT_WINDOW_LOW + CT_WINDOW_HIGH) / 2:.1f}"
        ds.WindowWidth = f"{CT_WINDOW_HIGH - CT_WINDOW_LOW:.1f}"
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
        return
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if style == "monochrome1":
        pixels = 255 - pixels  # MONOCHROME1: the lowest value is white
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds.PixelData = pixels.tobytes()
    if style == "jpeg":
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError("JPEG encoding failed")
        ds.PixelData = encapsulate([encoded.tobytes()])
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif style == "jpeg2000":
        ds.compress(JPEG2000, pixels, j2k_cr=[J2K_RATIO])
        ds.LossyImageCompression = "01"
    elif style == "jpegls":
        ds.compress(JPEGLSNearLossless, pixels, jls_error=JPEGLS_ERROR)
        ds.LossyImageCompression = "01"


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Grey, or RGB (written as PNG's RGB)."""
    ok, encoded = cv2.imencode(
        ".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    )
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    write_bytes_atomic(path, encoded.tobytes())


def contact_sheet(views: np.ndarray, title: str, captions: list[str]) -> np.ndarray:
    """One branch's views side by side under a title bar (no identifiers)."""
    size = views.shape[1]
    bar = max(18, size // 8)
    tiles = []
    for view, caption in zip(views, captions, strict=True):
        tile = np.zeros((size + bar, views.shape[2]), np.uint8)
        tile[bar:] = view
        cv2.putText(
            tile,
            caption,
            (2, bar - 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.3, size / 400),
            255,
            1,
            cv2.LINE_AA,
        )
        tiles.append(np.pad(tile, ((0, 0), (0, 2))))
    sheet = np.concatenate(tiles, axis=1)
    header = np.zeros((bar + 6, sheet.shape[1]), np.uint8)
    cv2.putText(
        header, title, (4, bar), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, size / 300), 255, 1, cv2.LINE_AA
    )
    return np.concatenate([header, sheet], axis=0)

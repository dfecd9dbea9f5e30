"""The cleanup removes burned-in text, keeps the vessel, and reads what hospitals export."""

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from cass_pipeline.domain.imaging.cleanup import clean_image, example_panel, persistent_overlay
from cass_pipeline.domain.imaging.config import CleanupConfig
from cass_pipeline.domain.imaging.pixel_text import identifier_readable, searchable
from cass_pipeline.domain.imaging.readers import ImageReadError, read_image
from cass_pipeline.domain.imaging.series_names import alias_table, branch_of_series
from cass_pipeline_tests.helpers import zoomed_text

VESSEL = 200


def synthetic_mpr(rng: np.random.Generator) -> np.ndarray:
    """A vertical vessel (200) on noisy tissue (60), text and a scale bar at 255."""
    image = np.clip(rng.normal(60, 8, (256, 256)), 0, 250).astype(np.uint8)
    image[:, 120:136] = VESSEL
    cv2.putText(image, "12345678 LAD 36 deg", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    cv2.putText(image, "2024-03-14", (4, 248), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    cv2.line(image, (190, 240), (250, 240), 255, 2)
    return np.where(image > 250, 255, image).astype(np.uint8)


def vendor_capture(rng: np.random.Generator) -> np.ndarray:
    """A workstation's capture as another vendor draws it: a 384-px view, patient name, MRN
    and study date in a duplex font, two lines at the top and one at the bottom."""
    image = np.clip(rng.normal(70, 10, (384, 384)), 0, 240).astype(np.uint8)
    image[:, 180:204] = VESSEL
    font = cv2.FONT_HERSHEY_DUPLEX
    cv2.putText(image, "MUELLER^ANNA", (6, 26), font, 0.8, 255, 1, cv2.LINE_8)
    cv2.putText(image, "ID 48213375", (6, 54), font, 0.8, 255, 1, cv2.LINE_8)
    cv2.putText(image, "04.03.2019", (6, 374), font, 0.8, 255, 1, cv2.LINE_8)
    return image


IDENTIFIERS = {"MUELLER^ANNA", "48213375", "04.03.2019"}


def test_the_before_panel_shows_no_readable_identifier_at_8x_zoom():
    raw = vendor_capture(np.random.default_rng(3))
    wanted = searchable(IDENTIFIERS)
    assert identifier_readable(zoomed_text(raw), wanted)  # the reader reads the source
    panel = example_panel(raw, CleanupConfig(size=384, border_level=0))
    before = panel[:, :384]
    assert (before[..., 2] == 255).any() and (before[..., 0] == 0).any()  # red boxes drawn
    assert not identifier_readable(zoomed_text(before), wanted)
    assert not identifier_readable(zoomed_text(panel), wanted)


def test_text_is_removed_and_the_vessel_kept():
    image = synthetic_mpr(np.random.default_rng(0))
    text = image == 255
    assert text.sum() > 100
    cleaned, stats = clean_image(image, CleanupConfig(size=256, border_level=0))
    assert stats.text_pixels == text.sum() and stats.crop == (0, 256, 0, 256)
    assert cleaned[text].max() < VESSEL  # nothing of the text stays as bright as the vessel
    vessel = np.zeros_like(text)
    vessel[30:230, 120:136] = True
    assert np.abs(cleaned[vessel].astype(int) - VESSEL).max() <= 2
    untouched = ~cv2.dilate(text.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    assert np.array_equal(cleaned[untouched], image[untouched])


def test_borders_are_cut_and_size_is_configurable():
    image = np.zeros((300, 200), np.uint8)
    image[20:280, 30:170] = 90
    cleaned, stats = clean_image(image, CleanupConfig(size=64))
    assert cleaned.shape == (64, 64) and cleaned.min() == 90
    assert stats.crop == (20, 280, 30, 170)
    with pytest.raises(ValueError):
        clean_image(image.astype(np.float32))


def test_alias_table_maps_vendor_names():
    assert branch_of_series("LAD *") == "LAD"
    assert branch_of_series("LAD-D1 original") == "D-1"
    assert branch_of_series("lcx-om1_original") == "OM-1"
    assert branch_of_series("RCA-PLB1") == "PLV-RCA"
    assert branch_of_series(" rca  pda ") == "PDA-RCA"
    assert branch_of_series("Calcium score") is None
    assert branch_of_series(None) is None
    assert len(alias_table()) > 60


def test_alias_table_rejects_clashing_aliases(tmp_path):
    bad = tmp_path / "aliases.yaml"
    bad.write_text("LAD: [X1]\nLCX: [x-1]\n")
    with pytest.raises(ValueError, match="names both"):
        alias_table(bad)


TESTDATA = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.dcm")), ids=lambda p: p.name)
def test_pydicom_test_files_are_read_or_rejected_with_a_reason(path):
    try:
        image = read_image(path.read_bytes(), path.suffix)
    except ImageReadError as error:
        assert str(error)
        return
    assert image.frames and all(f.dtype == np.uint8 and f.ndim == 2 for f in image.frames)
    cleaned, _ = clean_image(image.frames[0], CleanupConfig(size=64))
    assert cleaned.shape == (64, 64)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "SC_rgb_rle_2frame.dcm",
    ],
)
def test_common_transfer_syntaxes_decode(name):
    image = read_image((TESTDATA / name).read_bytes(), ".dcm")
    assert image.frames[0].std() > 0
    if "2frame" in name:
        assert len(image.frames) == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtplan.dcm", "^DICOM file without an image \\(RT Plan Storage\\)$"),
        ("MR_truncated.dcm", "^truncated DICOM file: 8130 of 8192 bytes of pixel data$"),
        ("JPEG-lossy.dcm", "cannot decode pixel data \\(JPEG Extended"),
        ("README.txt", "^not a DICOM file \\(\\d+ bytes without a DICOM header\\)$"),
        ("no_meta.dcm", "^not a DICOM file"),
    ],
)
def test_unusable_dicom_files_are_rejected_with_a_reason_a_user_can_act_on(name, reason):
    with pytest.raises(ImageReadError, match=reason) as error:
        read_image((TESTDATA / name).read_bytes(), ".dcm")
    assert "force=True" not in str(error.value)


def test_truncated_and_empty_files_are_called_so(tmp_path):
    whole = (TESTDATA / "CT_small.dcm").read_bytes()
    for cut in (400, len(whole) // 2):
        with pytest.raises(ImageReadError, match=r"^truncated DICOM file"):
            read_image(whole[:cut], ".dcm")
    with pytest.raises(ImageReadError, match=r"^empty file \(0 bytes\)$"):
        read_image(b"", ".dcm")


def test_dicom_without_preamble_is_read(tmp_path):
    ds = pydicom.dcmread(TESTDATA / "CT_small.dcm")
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "raw.dcm", ds, implicit_vr=False, little_endian=True)
    assert (tmp_path / "raw.dcm").read_bytes()[128:132] != b"DICM"
    image = read_image((tmp_path / "raw.dcm").read_bytes(), ".dcm")
    assert image.frames[0].shape == (128, 128)


def test_monochrome1_is_inverted_and_bitmaps_are_read(tmp_path):
    ds = pydicom.dcmread(TESTDATA / "CT_small.dcm")
    normal = read_image((TESTDATA / "CT_small.dcm").read_bytes(), ".dcm").frames[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    inverted = read_image((tmp_path / "m1.dcm").read_bytes(), ".dcm").frames[0]
    assert np.array_equal(inverted, 255 - normal)
    _, png = cv2.imencode(".png", np.dstack([normal] * 3))
    assert np.array_equal(read_image(png.tobytes(), ".png").frames[0], normal)
    with pytest.raises(ImageReadError, match="not a decodable PNG"):
        read_image(b"\x89PNG broken", ".png")
    with pytest.raises(ImageReadError, match="too small"):
        read_image(cv2.imencode(".png", np.ones((8, 8), np.uint8))[1].tobytes(), ".png")


def text_across_a_vessel(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Background ~70 with noise, a bright vertical vessel, a line of white text across it."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(70, 6, (size, size)), 0, 200).astype(np.uint8)
    image[:, size // 2 - 8 : size // 2 + 8] = 210  # the lumen, full height
    text = np.zeros((size, size), bool)
    for x in range(20, size - 20, 9):  # glyph-like strokes across the vessel
        text[100:112, x : x + 2] = True
        text[105:107, x : x + 9] = True
    image[text] = 255
    return image, text


def test_text_across_a_vessel_leaves_no_bright_blob_away_from_it():
    image, text = text_across_a_vessel()
    config = CleanupConfig(size=256, border_level=0)
    cleaned, stats = clean_image(image, config)
    assert stats.crop == (0, 256, 0, 256)
    away = text.copy()
    away[:, 128 - 24 : 128 + 24] = False  # the text area, more than 16 px from the vessel
    background = image[~text][np.abs(np.arange(256) - 128)[np.newaxis].repeat(256, 0)[~text] > 24]
    assert cleaned[away].max() <= background.max()  # nothing the surroundings do not explain
    assert cleaned[away].mean() < 90
    assert cleaned[text].max() <= 210  # never brighter than the brightest tissue around


def test_cleanup_records_its_algorithm_version():
    from cass_pipeline.domain.imaging.config import CLEANUP_VERSION

    assert CLEANUP_VERSION >= 2
    assert CleanupConfig().fingerprint() != CleanupConfig(size=256).fingerprint()


def brightest_around(image: np.ndarray, masked: np.ndarray, radius: int) -> np.ndarray:
    """Per masked pixel: the brightest unmasked pixel within `radius`, else twice, ... px."""
    visible = np.where(masked, 0, image).astype(np.uint8)
    out, need = np.full(image.shape, 255, np.uint8), masked.copy()
    while need.any():
        kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
        take = need & (cv2.dilate((~masked).astype(np.uint8), kernel) > 0)
        out[take] = cv2.dilate(visible, kernel)[take]
        need &= ~take
        radius *= 2
    return out


def test_no_filled_text_pixel_is_brighter_than_its_surroundings(tiny_cohort):
    from cass_pipeline.domain.imaging.cleanup import remove_text

    config = CleanupConfig()
    checked = 0
    for path in sorted((tiny_cohort / "mpr").rglob("*.dcm")):
        frame = read_image(path.read_bytes(), ".dcm").frames[0]
        text = frame >= config.text_level
        kernel = np.ones((2 * config.dilate_px + 1,) * 2, np.uint8)
        mask = cv2.dilate(text.astype(np.uint8), kernel)
        filled = remove_text(frame, mask, config)
        masked = mask.astype(bool)
        around = brightest_around(frame, masked, config.dilate_px + 2)
        assert (filled[masked] <= around[masked]).all(), path.name
        assert (filled[~masked] == frame[~masked]).all()  # only the text area changes
        checked += int(masked.sum())
    assert checked > 1000


def coloured(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The grey image as an RGB secondary capture draws it: anatomy grey, overlay in colour."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[image == 255] = colour
    return rgb


def rgb_dicom(rgb: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("colour", [(255, 255, 0), (0, 255, 255), (255, 64, 64)])
def test_coloured_overlay_is_found_by_its_colour_and_cleaned_as_white_text(colour):
    image = synthetic_mpr(np.random.default_rng(1))
    config = CleanupConfig(size=256, border_level=0)
    plain, plain_stats = clean_image(image, config)
    rgb = coloured(image, colour)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for read in (
        read_image(rgb_dicom(rgb), ".dcm"),
        read_image(cv2.imencode(".png", bgr)[1].tobytes(), ".png"),
    ):
        frame, hints = read.frames[0], read.hints(0)
        assert (frame[image == 255] < 254).all()  # in grey, below the text level
        assert np.array_equal(hints.colour, image == 255)  # every overlay pixel, nothing else
        cleaned, stats = clean_image(frame, config, hints)
        assert stats.text_pixels == plain_stats.text_pixels
        assert np.array_equal(cleaned, plain)  # as if the overlay had been white


def test_saturated_calcium_and_contrast_are_kept_and_the_text_removed():
    image = synthetic_mpr(np.random.default_rng(2))
    cv2.circle(image, (128, 128), 6, 255, -1)  # calcified plaque windowed to white
    image[170:200, 122:134] = 255  # a contrast-filled stretch of lumen at the top level
    config = CleanupConfig(size=256, border_level=0)
    cleaned, stats = clean_image(image, config)
    assert cleaned[124:133, 124:133].min() == 255  # the calcium stays, not inpainted
    assert cleaned[172:198, 124:132].min() == 255
    text = np.zeros_like(image, bool)
    text[:30], text[230:] = True, True
    assert cleaned[text & (image == 255)].max() < VESSEL  # the text is gone
    assert stats.text_pixels == int((image[text] == 255).sum())


def test_text_of_a_jpeg_export_is_removed_with_its_ringing():
    image = synthetic_mpr(np.random.default_rng(3))
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    read = read_image(jpeg, ".jpg")
    assert read.lossy and read.hints(0).lossy
    text = np.zeros_like(image, bool)
    text[:30], text[230:] = True, True
    glyphs = text & (image == 255)
    assert (read.frames[0][glyphs] < 254).mean() > 0.3  # the glyphs fell below the level
    config = CleanupConfig(size=256, border_level=0)
    by_level = clean_image(read.frames[0], config)[0]
    cleaned, _ = clean_image(read.frames[0], config, read.hints(0))
    assert by_level[glyphs].max() > VESSEL  # the level rule leaves bits of glyphs behind
    assert cleaned[glyphs].max() < VESSEL  # the lossy hint takes them, halo and all
    assert np.abs(cleaned[:, 120:136].astype(int) - VESSEL).mean() < 6  # the vessel stays


def rotating_series(views: int = 6, size: int = 128) -> list[np.ndarray]:
    """Views of a rotating vessel: noise and a lumen that moves, the centreline the same in
    every view (varying along its length), and a grey annotation drawn in the same place."""
    rng = np.random.default_rng(4)
    centreline = np.linspace(150, 230, size).astype(np.uint8)
    frames = []
    for k in range(views):
        frame = rng.normal(60, 10, (size, size)).clip(0, 250).astype(np.uint8)
        half = 4 + k
        frame[:, size // 2 - half : size // 2 + half] = 170 + 5 * k
        frame[:, size // 2] = centreline
        cv2.putText(frame, "DOE JOHN", (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 180, 2)
        frames.append(frame)
    return frames


def test_an_annotation_the_whole_series_shows_in_one_place_is_removed():
    frames = rotating_series()
    cv2.putText(frames[2], "12345678", (60, 90), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 180, 1)
    steady = persistent_overlay(frames)
    found = steady > 0
    annotation = np.zeros_like(frames[0], bool)
    cv2.putText(annotation.view(np.uint8), "DOE JOHN", (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1, 2)
    core = annotation & (frames[0] == 180)  # not the anti-aliased edge, which the mask grows over
    core[:, 50:80] = False  # a glyph joined to the steady centreline is taken for anatomy
    assert found[core].mean() > 0.9  # the grey annotation, below the text level
    assert not found[:, 64].any()  # the centreline every rotation shows is anatomy
    assert not found[70:95, 55:125].any()  # text in one view only is not the series'
    config = CleanupConfig(size=128, border_level=0)
    read = read_image(cv2.imencode(".png", frames[0])[1].tobytes(), ".png")
    cleaned, _ = clean_image(frames[0], config, read.hints(0, steady))
    off_vessel = annotation.copy()
    off_vessel[:, 50:80] = False  # where it crosses the lumen, it is as bright as the lumen
    assert cleaned[off_vessel].max() < 120
    assert np.array_equal(cleaned[40:, 64], frames[0][40:, 64])  # below the annotation
    assert persistent_overlay(frames[:3]) is None  # too few views to tell

"""Views exported as other workstations write them: the overlay in colour, or a window that
saturates calcium and contrast. Each style is compared with the grey export of the same
patients (the session's tiny cohort: same seed, same anatomy)."""

import numpy as np
import pandas as pd
import pydicom
import pytest

from cass_pipeline.domain.imaging.cleanup import CleanupConfig, clean_image, overlay_mask
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.imaging.readers import read_image
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.layout import ground_truth_table, store_name

CONFIG = CleanupConfig(size=64)


#: How far the cleaned RGB export may be from the cleaned grey one (grey levels): the
#: inpainting sees the overlay's own value (226 for yellow, 255 for white) at its edge.
MEAN_DIFFERENCE, MAX_DIFFERENCE = 0.05, 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny RGB export (64 px), and one patient at 512 px saturated and grey."""
    styles = ("colour", "monochrome1", "saturated", "grey")
    folders = {style: tmp_path_factory.mktemp(style) for style in styles}
    generate_cohort(preset("tiny", n_patients=2, export_style="colour_overlay"), folders["colour"])
    generate_cohort(
        preset("tiny", n_patients=2, export_style="monochrome1"), folders["monochrome1"]
    )
    for style in ("saturated", "grey"):
        config = preset("paper", n_patients=1, n_views=4, export_style=style)
        generate_cohort(config, folders[style], workers=2)
    return folders


def view_pairs(styled, grey_root):
    """(styled view, grey view, ground-truth overlay pixels) for every view of `styled`."""
    views = pd.read_parquet(ground_truth_table(styled, "views")).set_index("file")
    for path in sorted((styled / "mpr").rglob("*.dcm")):
        relative = path.relative_to(styled).as_posix()
        grey = read_image((grey_root / relative).read_bytes(), ".dcm")
        yield read_image(path.read_bytes(), ".dcm"), grey, views.overlay_pixels[relative]


def stores(raw, tmp_path):
    results = ingest_cohort(raw, tmp_path, Pseudonyms(b"styles"), IngestConfig(CONFIG), workers=1)
    return {r.patient_id: np.load(tmp_path / store_name(r.patient_id)) for r in results if r.rows}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    difference = np.abs(a.astype(int) - b.astype(int))
    return difference.mean() <= MEAN_DIFFERENCE and difference.max() <= MAX_DIFFERENCE


def test_a_coloured_overlay_is_found_whole_and_cleaned_as_the_white_one(exported, tiny_cohort):
    checked = 0
    for styled, grey, overlay_pixels in view_pairs(exported["colour"], tiny_cohort):
        text = grey.frames[0] == 255
        assert int(text.sum()) == overlay_pixels  # the ground truth's overlay
        assert np.array_equal(styled.overlay(0), text)  # every overlay pixel, nothing else
        assert (styled.frames[0][text] < 254).all()  # invisible to a rule by level
        cleaned, _ = clean_image(styled.frames[0], CONFIG, styled.overlay(0))
        assert close(cleaned, clean_image(grey.frames[0], CONFIG)[0])
        checked += 1
    assert checked >= 20


def test_ingestion_of_the_rgb_export_stores_the_grey_exports_pixels(
    exported, tiny_cohort, tmp_path
):
    coloured = stores(exported["colour"], tmp_path / "colour")
    grey = stores(tiny_cohort, tmp_path / "grey")
    assert coloured and set(coloured) <= set(grey)
    for patient, views in coloured.items():
        assert close(views, grey[patient])


def test_a_monochrome1_export_is_read_inverted_back_and_stored_as_the_grey_one(
    exported, tiny_cohort, tmp_path
):
    first = next((exported["monochrome1"] / "mpr").rglob("*.dcm"))
    stored = pydicom.dcmread(first)
    twin = pydicom.dcmread(tiny_cohort / first.relative_to(exported["monochrome1"]))
    assert stored.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(stored.pixel_array, 255 - twin.pixel_array)  # stored inverted
    for styled, grey, _ in view_pairs(exported["monochrome1"], tiny_cohort):
        assert np.array_equal(styled.frames[0], grey.frames[0])
    inverted = stores(exported["monochrome1"], tmp_path / "inverted")
    grey = stores(tiny_cohort, tmp_path / "grey")
    assert inverted and all(np.array_equal(v, grey[p]) for p, v in inverted.items())


def test_saturated_anatomy_is_kept_and_the_text_removed(exported):
    config = CleanupConfig()
    anatomy_pixels = kept = text_pixels = missed = 0
    for styled, grey, _ in view_pairs(exported["saturated"], exported["grey"]):
        frame, text = styled.frames[0], grey.frames[0] == 255
        anatomy = (frame >= config.text_level) & ~text  # contrast and calcium at 255
        found = overlay_mask(frame, config)
        anatomy_pixels += int(anatomy.sum())
        kept += int((anatomy & ~found).sum())
        text_pixels += int(text.sum())
        missed += int((text & ~found).sum())
    assert anatomy_pixels > 10_000
    assert kept / anatomy_pixels >= 0.9  # measured 97%; the level rule keeps none
    assert missed / text_pixels <= 0.06  # where the text lies on white anatomy (measured 4.7%)

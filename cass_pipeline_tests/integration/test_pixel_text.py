"""The OCR check on written pixels: an identifier the cleanup missed fails ingestion's blocking
check and stops `report.png`; clean views raise no alarm."""

import shutil

import cv2
import dagster as dg
import numpy as np
import pydicom
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import imaging
from cass_pipeline.defs.assets.cohort import raw_cohort
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.imaging.pixel_text import (
    check_pixels,
    identifier_readable,
    tessdata_dir,
)


def vessel_view(size: int = 128, seed: int = 0) -> np.ndarray:
    """A clean-looking view: noise with a bright, slightly curved vessel."""
    rng = np.random.default_rng(seed)
    view = rng.normal(60, 12, (size, size)).clip(0, 255).astype(np.uint8)
    for row in range(size):
        centre = size // 2 + int(6 * np.sin(row / 20))
        view[row, centre - 5 : centre + 5] = 190
    return cv2.GaussianBlur(view, (3, 3), 0)


def with_text(view, text: str, level: int = 200, at: tuple[float, float] = (0.03, 0.44)):
    """`text` burned in below the cleanup's text level (as a grey or coloured overlay is), from
    `at` (shares of the width and height)."""
    size = view.shape[0]
    out = view.copy()
    origin = (int(at[0] * size), int(at[1] * size))
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * size / 128, level, 1)
    return out


def test_a_planted_identifier_is_read_and_clean_views_are_not():
    tessdata_dir()
    clean = {f"LAD/{k}": vessel_view(seed=k) for k in range(3)}
    assert check_pixels(clean, {"40417233", "NOVAK^Marco"}).passed
    planted = dict(clean) | {"LAD/1": with_text(clean["LAD/1"], "MRN 40417233")}
    read = check_pixels(planted, {"40417233", "NOVAK^Marco"})
    assert read.identifier_views == ["LAD/1"]
    assert read.views_read == 3 and not read.passed
    assert "LAD/1" in read.problem() and "40417233" not in read.problem()


def test_identifiers_are_found_as_ocr_misreads_them():
    assert identifier_readable("MRN 46417233", {"40417233"})  # one digit misread
    assert identifier_readable("DOEJOHN 2021", {"John"})  # words run together
    assert identifier_readable("born 1961 03 04", {"1961-03-04"})
    assert identifier_readable("MRN 404172", {"40417233"})  # cut short
    assert not identifier_readable("MRN 4041", {"40417233"})  # too little of it
    assert not identifier_readable("MRN 46411233", {"40417233"})  # two apart
    assert not identifier_readable("Johnson", {"Jon"})  # short tokens only whole


def plant_identifier(raw, case: str = "CASE-0001") -> None:
    """One view of the patient's LAD, upscaled to 256 px, with its PatientID burned in at grey
    200: a grey overlay that the cleanup does not take for text."""
    lad = next(p for p in (raw / "mpr" / case).iterdir() if p.name.upper() == "LAD")
    path = sorted(lad.glob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    big = cv2.resize(ds.pixel_array, (256, 256), interpolation=cv2.INTER_NEAREST)
    planted = with_text(big.astype(np.uint8), ds.PatientID, at=(0.55, 0.62))  # clear of its text
    ds.Rows, ds.Columns = planted.shape
    ds.PixelData = planted.tobytes()
    ds.save_as(path)


def materialise(raw, out, size: int):
    return dg.materialize(
        [
            raw_cohort,
            imaging.mpr_images,
            imaging.no_identifier_in_stored_pixels,
            imaging.no_text_in_stored_pixels,
        ],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(out)),
            "pseudonyms": PseudonymKey(key_file=str(out / "key"), key="k"),
            "raw_format": RawFormat(),
        },
        selection=dg.AssetSelection.groups("images"),
        run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": size, "workers": 1}}}),
        raise_on_error=False,
    )


def test_an_identifier_left_in_the_stored_pixels_fails_the_blocking_check(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    plant_identifier(raw)
    result = materialise(raw, tmp_path / "out", size=128)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    failed = checks["no_identifier_in_stored_pixels"]
    assert not failed.passed
    metadata = failed.metadata
    assert metadata["views_with_identifiers"].value == 1
    assert metadata["views_read"].value >= 3 * 4  # first, middle and last of each branch
    (view,) = metadata["views"].value
    assert view.endswith("/LAD/0") and view.startswith("P")
    assert checks["no_text_in_stored_pixels"].passed


def test_clean_stores_pass_with_what_was_read_in_the_metadata(tiny_cohort, tmp_path):
    result = materialise(tiny_cohort, tmp_path / "out", size=48)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    for name in ("no_identifier_in_stored_pixels", "no_text_in_stored_pixels"):
        assert checks[name].passed, checks[name].metadata
    metadata = checks["no_identifier_in_stored_pixels"].metadata
    assert metadata["patients"].value == 4 and metadata["patients_not_read"].value == 0
    assert metadata["engine"].value.startswith("Tesseract ")
    assert metadata["views_read"].value >= 12 and metadata["ocr_seconds"].value >= 0


def test_clean_mpr_does_not_write_a_view_with_a_readable_identifier(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort / "mpr" / "CASE-0001", raw / "mpr" / "CASE-0001")
    plant_identifier(raw)
    source = sorted((raw / "mpr" / "CASE-0001" / "LAD").glob("*.dcm"))[0]
    runner = CliRunner()
    planted = runner.invoke(main, ["clean-mpr", str(source), str(tmp_path / "a.png")])
    assert planted.exit_code == 1 and "not written" in planted.output
    assert pydicom.dcmread(source).PatientID not in planted.output
    assert not (tmp_path / "a.png").exists()
    clean = sorted((raw / "mpr" / "CASE-0001" / "LAD").glob("*.dcm"))[1]
    written = runner.invoke(main, ["clean-mpr", str(clean), str(tmp_path / "b.png")])
    assert written.exit_code == 0 and (tmp_path / "b.png").is_file()

"""`cass synth` writes the promised layout, deterministically, with consistent ground truth."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.imaging.cpr import curved_mpr_views
from cass_pipeline.domain.imaging.volume_io import read_centrelines, read_nifti
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.domain.synthetic.export import CONTENT_MAX, TEXT_LEVEL
from cass_pipeline.layout import GROUND_TRUTH_TABLES, ground_truth_table

SERIES_PATTERN = re.compile(r"^(LAD|LCX|RCA)(-(D\d|OM\d|PDA|PLB\d))?( \*| original)?$", re.I)


def file_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.suffix in {".dcm", ".txt", ".png", ".parquet"}
        and ".synth" not in p.parts
    }


@pytest.mark.slow
def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path):
    runner = CliRunner()
    for name, workers in (("a", "1"), ("b", "2")):
        result = runner.invoke(
            main,
            [
                "synth",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path / name),
                "--seed",
                "7",
                "--workers",
                workers,
            ],
        )
        assert result.exit_code == 0, result.output
    first, second = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert any(k.endswith(".dcm") for k in first) and any(k.endswith(".txt") for k in first)
    assert first == second
    other = runner.invoke(
        main,
        [
            "synth",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "c"),
            "--seed",
            "8",
            "--workers",
            "1",
        ],
    )
    assert other.exit_code == 0
    assert file_bytes(tmp_path / "c") != first


def test_dicom_export_looks_like_a_workstation_export(tiny_cohort):
    views = pd.read_parquet(ground_truth_table(tiny_cohort, "views"))
    branches = pd.read_parquet(ground_truth_table(tiny_cohort, "branches"))
    assert len(views) == sum(1 for _ in (tiny_cohort / "mpr").rglob("*.dcm"))
    for row in views.groupby(["case_id", "branch"]).head(1).itertuples():
        ds = pydicom.dcmread(tiny_cohort / row.file)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert SERIES_PATTERN.match(ds.SeriesDescription), ds.SeriesDescription
        assert ds.InstanceNumber == row.view_index
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint8 and pixels.shape == (64, 64)
        assert pixels.max() == TEXT_LEVEL  # burned-in text at the brightest level
        assert np.sort(np.unique(pixels))[-2] <= CONTENT_MAX
        expected = branches.query("case_id == @row.case_id and branch == @row.branch")
        assert expected.series_description.item() == ds.SeriesDescription


def test_ground_truth_is_consistent(tiny_cohort):
    patients, branches, views = (
        pd.read_parquet(ground_truth_table(tiny_cohort, name)) for name in GROUND_TRUTH_TABLES
    )
    config = json.loads((tiny_cohort / "cohort.json").read_text())["config"]
    assert len(patients) == 4
    per_branch = views.groupby(["case_id", "branch"]).size()
    assert (per_branch == config["n_views"]).all()
    assert len(per_branch) == branches.exported.sum()
    worst = branches.groupby("case_id").label.max().map(dict(enumerate(STENOSIS_CLASSES)))
    assert (patients.set_index("case_id").patient_class == worst).all()
    lesions = branches[branches.label > 0]
    assert lesions.plaque_type.notna().all() and lesions.lesion_angle_deg.notna().all()
    assert branches[branches.label == 0].plaque_type.isna().all()
    # The best-aligned view sees most of the stenosis; cut_through_lesion follows apparent.
    merged = views.merge(branches, on=["case_id", "branch"])
    lesion_views = merged[merged.label > 0]
    if len(lesion_views):
        assert (
            lesion_views.cut_through_lesion
            == (lesion_views.apparent_stenosis_pct >= 0.5 * lesion_views.stenosis_pct)
        ).all()
    assert not merged[merged.label == 0].cut_through_lesion.any()


def test_reports_carry_an_identifying_header_that_the_ground_truth_does_not(tiny_cohort):
    report = (tiny_cohort / "reports" / "CASE-0001.txt").read_text()
    mrn = re.search(r"MRN: (\d+)", report).group(1)
    assert re.search(r"Patient: [A-Z]+, \w+ +DOB: ", report)
    assert "IMPRESSION" in report and "CAD-RADS" in report
    dicom = next((tiny_cohort / "mpr" / "CASE-0001").rglob("*.dcm"))
    assert pydicom.dcmread(dicom).PatientID == mrn
    for table in ("patients", "branches", "views"):
        text = pd.read_parquet(ground_truth_table(tiny_cohort, table)).to_csv()
        assert mrn not in text


def test_volume_and_centrelines_reproduce_the_views(tiny_cohort):
    volume = read_nifti(tiny_cohort / "volumes" / "CASE-0001.nii.gz")
    centrelines = read_centrelines(tiny_cohort / "centrelines" / "CASE-0001.json")
    config = preset("tiny")
    branch = next(iter(centrelines))
    cpr = curved_mpr_views(
        volume, centrelines[branch], config.n_views, config.view_width_mm, config.cpr_pixel_mm
    )
    centre = cpr.images[:, 10:-10, cpr.images.shape[2] // 2]
    assert np.median(centre) > 200  # the lumen runs down the middle of every view


def test_rerun_skips_finished_patients_and_repairs_a_killed_run(tmp_path):
    config = preset("tiny", n_patients=3)
    generate_cohort(config, tmp_path, workers=1)
    reference = file_bytes(tmp_path)
    report = tmp_path / "reports" / "CASE-0002.txt"
    mtime = report.stat().st_mtime_ns
    # A killed run: a patient half-written in staging, its marker never completed.
    marker = tmp_path / ".synth" / "CASE-0003.json"
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    shutil.rmtree(tmp_path / "mpr" / "CASE-0003")
    (tmp_path / ".synth" / "staging" / "CASE-0003" / "LAD").mkdir(parents=True)
    (tmp_path / ".synth" / "staging" / "CASE-0003" / "LAD" / "000.dcm").write_bytes(b"junk")
    generate_cohort(config, tmp_path, workers=1)
    assert report.stat().st_mtime_ns == mtime
    assert file_bytes(tmp_path) == reference


def test_png_export_and_bad_settings(tmp_path):
    generate_cohort(preset("tiny", n_patients=1, image_format="png"), tmp_path, workers=1)
    assert any((tmp_path / "mpr" / "CASE-0001").rglob("*.png"))
    assert (tmp_path / "contact_sheet.png").is_file()
    with pytest.raises(ValueError, match="difficulty"):
        preset("tiny", difficulty="impossible")

"""The raw_cohort asset writes the synthetic cohort only where no real export lives."""

import shutil

import dagster as dg

from cass_pipeline.defs.assets import imaging, reports
from cass_pipeline.defs.assets.cohort import raw_cohort, raw_cohort_files_complete
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat


def materialize(raw, processed):
    return dg.materialize(
        [raw_cohort, raw_cohort_files_complete],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(processed)),
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig(
            {"raw_cohort": {"config": {"preset": "tiny", "n_patients": 2, "workers": 1}}}
        ),
    )


def test_synthetic_cohort_is_materialised_with_metadata(tmp_path):
    result = materialize(tmp_path / "raw", tmp_path / "processed")
    assert result.success
    metadata = result.asset_materializations_for_node("raw_cohort")[0].metadata
    assert metadata["source"].value == "synthetic"
    assert metadata["patients"].value == 2
    assert metadata["views_row_count"].value == metadata["images"].value > 0
    assert "data:image/png;base64," in metadata["contact_sheet"].value
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]


def test_a_real_export_is_left_untouched(tmp_path):
    raw = tmp_path / "raw"
    (raw / "mpr" / "patient_a" / "LAD").mkdir(parents=True)
    (raw / "reports").mkdir()
    (raw / "reports" / "patient_a.txt").write_text("LAD: normal")
    result = materialize(raw, tmp_path / "processed")
    assert result.success
    metadata = result.asset_materializations_for_node("raw_cohort")[0].metadata
    assert metadata["source"].value == "real export"
    assert sorted(p.name for p in raw.iterdir()) == ["mpr", "reports"]


def ingest(raw, processed, instance):
    """raw_cohort, the report and image assets with their blocking patient-count checks."""
    return dg.materialize(
        [
            raw_cohort,
            reports.report_labels,
            reports.reports_have_patients,
            imaging.mpr_images,
            imaging.mpr_manifest_has_patients,
        ],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(processed)),
            "pseudonyms": PseudonymKey(key_file=str(processed / "key"), key="k"),
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig(
            {
                "raw_cohort": {"config": {"preset": "tiny", "workers": 1}},
                "mpr_images": {"config": {"image_size": 32, "workers": 1}},
                "report_labels": {"config": {"workers": 1}},
            }
        ),
        instance=instance,
        raise_on_error=False,
    )


def failed_checks(result) -> dict[str, str]:
    return {
        c.check_name: c.description for c in result.get_asset_check_evaluations() if not c.passed
    }


def test_an_export_in_the_wrong_layout_fails_saying_what_was_expected(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort / "mpr" / "CASE-0001", raw / "export" / "CASE-0001")
    shutil.copy(tiny_cohort / "reports" / "CASE-0001.txt", raw / "export")
    with dg.instance_for_test() as instance:
        result = ingest(raw, tmp_path / "out", instance)
    assert not result.success
    failed = failed_checks(result)
    assert set(failed) == {"mpr_manifest_has_patients", "reports_have_patients"}
    files = sum(1 for p in (raw / "export").rglob("*") if p.is_file())
    assert "no patient was ingested" in failed["mpr_manifest_has_patients"]
    assert "raw/mpr/<patient>/<series>/<view>.dcm" in failed["mpr_manifest_has_patients"]
    assert f"{files} files elsewhere" in failed["mpr_manifest_has_patients"]
    assert "raw/reports/<patient>.txt" in failed["reports_have_patients"]


def test_an_empty_raw_folder_fails_the_run_naming_the_layout(tmp_path):
    (tmp_path / "raw").mkdir()
    with dg.instance_for_test() as instance:
        result = ingest(tmp_path / "raw", tmp_path / "out", instance)
    assert not result.success
    failure = result.failure_data_for_node("raw_cohort").error.message
    assert "is empty" in failure and "raw/mpr/<patient>/<series>/<view>.dcm" in failure
    assert list((tmp_path / "raw").iterdir()) == []


def test_a_rerun_that_lost_most_patients_fails(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    for folder in ("mpr", "reports"):
        shutil.copytree(tiny_cohort / folder, raw / folder)
    with dg.instance_for_test() as instance:
        assert ingest(raw, tmp_path / "out", instance).success
        for case in ("CASE-0002", "CASE-0003", "CASE-0004"):  # a half-copied export
            shutil.rmtree(raw / "mpr" / case)
            (raw / "reports" / f"{case}.txt").unlink()
        result = ingest(raw, tmp_path / "out", instance)
    failed = failed_checks(result)
    assert set(failed) == {"mpr_manifest_has_patients", "reports_have_patients"}
    assert (
        "1 patients, against 4 in the previous materialisation" in failed["reports_have_patients"]
    )

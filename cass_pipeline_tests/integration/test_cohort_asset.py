"""The raw_cohort asset writes the synthetic cohort only where no real export lives."""

import dagster as dg

from cass_pipeline.defs.assets.cohort import raw_cohort, raw_cohort_files_complete
from cass_pipeline.defs.resources import CassPaths


def materialize(raw, processed):
    return dg.materialize(
        [raw_cohort, raw_cohort_files_complete],
        resources={"paths": CassPaths(raw_dir=str(raw), processed_dir=str(processed))},
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


def test_files_check_fails_when_a_view_is_missing(tmp_path):
    assert materialize(tmp_path / "raw", tmp_path / "processed").success
    next((tmp_path / "raw" / "mpr").rglob("*.dcm")).unlink()
    paths = CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "p"))
    check = raw_cohort_files_complete(paths)
    assert not check.passed and check.metadata["missing"].value == 1

"""A report whose stated CAD-RADS disagrees with its grades is held out of training until a
reviewer's overrides file under raw/reviews settles it."""

import re
import shutil

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from cass_pipeline.defs.assets import reports as report_assets
from cass_pipeline.domain.cohort.report_sources import text_report
from cass_pipeline.domain.model.splits import SplitSettings
from cass_pipeline.domain.privacy import pseudonymise
from cass_pipeline.domain.storage import write_parquet_atomic
from cass_pipeline.runs.training import write_splits
from cass_pipeline_tests.helpers import layout_of, materialise_reports

SECRET = "review-secret"
PLANTED = "CASE-0002"


def plant_disagreement(report) -> None:
    """The report's impression states a category its own grades do not give."""
    text = report.read_text()
    stated = re.search(r"CAD-RADS (\w+)", text).group(1)
    wrong = "0" if stated != "0" else "4A"
    report.write_text(text.replace(f"CAD-RADS {stated}", f"CAD-RADS {wrong}"))


def materialise(root, hold_flagged=True):
    config = report_assets.ReportConfig(hold_flagged=hold_flagged)
    result = materialise_reports(root, SECRET, dg.RunConfig(ops={"report_labels": config}))
    assert result.success
    return result, {c.check_name: c for c in result.get_asset_check_evaluations()}


def trained_patients(root) -> set[str]:
    """The patients `write_splits` (the training run's split) takes, with images for all."""
    layout = layout_of(root / "processed")
    patients = pd.read_parquet(layout.patient_labels, columns=["patient_id"])
    write_parquet_atomic(
        pa.Table.from_pandas(patients, preserve_index=False),
        layout.manifest,
        pa.schema([("patient_id", pa.string())]),
    )
    table, _ = write_splits(layout, SplitSettings(train=0.5, validation=0.25, test=0.25))
    return set(table.patient_id)


@pytest.fixture
def cohort(tmp_path, tiny_cohort):
    shutil.copytree(tiny_cohort / "reports", tmp_path / "raw" / "reports")
    report = tmp_path / "raw" / "reports" / f"{PLANTED}.txt"
    plant_disagreement(report)
    return tmp_path, pseudonymise(text_report(report).mrn, SECRET.encode())


def test_a_disagreeing_report_waits_for_review_and_the_review_releases_it(cohort):
    root, planted = cohort
    layout = layout_of(root / "processed")
    result, checks = materialise(root)
    shown = next(
        m.metadata
        for m in result.asset_materializations_for_node("report_labels")
        if m.asset_key == dg.AssetKey("label_review")
    )
    assert shown["reports_to_review"].value == 1
    assert [r.data["patient_id"] for r in shown["queue"].value.records] == [planted]
    review = pd.read_parquet(layout.label_review)
    queue = review[review.status == "to review"]
    assert list(queue.patient_id) == [planted]
    assert queue.flag.iloc[0] == "stated CAD-RADS disagrees"
    assert "CAD-RADS" in queue.evidence.iloc[0]
    assert queue.branch_grades.iloc[0]
    labels = pd.read_parquet(layout.patient_labels).set_index("patient_id")
    assert labels.held_for_review.to_dict() == {p: p == planted for p in labels.index}
    share = checks["review_queue_share"]
    assert not share.passed and share.severity == dg.AssetCheckSeverity.WARN
    assert planted not in trained_patients(root)
    assert len(trained_patients(root)) == len(labels) - 1

    reviews = root / "raw" / "reviews"
    reviews.mkdir()
    (reviews / "cardiology.csv").write_text(
        "patient_id,branch,label,note\n"
        f"{planted},LAD,70-99%,re-read on the workstation\n"
        f"{planted},XYZ,significant,\n"
        "PNOSUCHPATIENT,RCA,none,\n"
    )
    _, checks = materialise(root)
    labels = pd.read_parquet(layout.patient_labels).set_index("patient_id")
    assert not labels.held_for_review.any() and labels.reviewed[planted]
    branches = pd.read_parquet(layout.branch_labels)
    lad = branches[(branches.patient_id == planted) & (branches.branch == "LAD")].iloc[0]
    assert (lad.source, lad.stenosis_class, lad.pct_low, lad.pct_high) == (
        "review",
        "significant",
        70,
        99,
    )
    assert lad.review_note == "re-read on the workstation"
    assert (branches[branches.branch != "LAD"].source == "report").all()
    review = pd.read_parquet(layout.label_review)
    assert set(review[review.patient_id == planted].status) == {"reviewed"}
    assert checks["review_queue_share"].passed
    assert checks["branch_labels_traceable"].passed
    assert planted in trained_patients(root)
    rejects = pd.read_parquet(layout.report_rejects)
    reasons = set(rejects[rejects.stage == "review"].reason)
    assert any("cardiology.csv row 3" in r and "unknown branch 'XYZ'" in r for r in reasons)
    assert "a reviewer's override names no parsed report of this pseudonym" in reasons


def test_the_setting_lets_flagged_reports_train(cohort):
    root, planted = cohort
    materialise(root, hold_flagged=False)
    labels = pd.read_parquet(layout_of(root / "processed").patient_labels)
    assert not labels.held_for_review.any()
    assert planted in trained_patients(root)

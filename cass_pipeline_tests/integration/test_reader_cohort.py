"""A patient a reader corrected in the reading room joins the next training cohort when the
setting says so: its inbox study ingested, its branches labelled as read, in training only,
and no report-labelled patient moved; the key holder maps its pseudonym back to the study."""

import shutil

import dagster as dg
import pandas as pd
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import imaging, model, reports, review
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat, ReviewDatabase
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.prediction.inbox import study_id
from cass_pipeline.domain.review.store import ReviewStore, Verdict
from cass_pipeline_tests.helpers import layout_of

MOVED = "CASE-0004"
SPLIT = {"train": 0.34, "validation": 0.33, "test": 0.33, "floor_per_class": 0}


def run(root, mode: str) -> dg.ExecuteInProcessResult:
    """The labels, images and splits with readers' verdicts `mode`."""
    keys = PseudonymKey(key_file=str(root / "key"))
    result = dg.materialize(
        [
            review.reader_labels,
            review.reader_labels_all_used,
            reports.report_labels,
            imaging.mpr_images,
            model.patient_splits,
        ],
        resources={
            "paths": CassPaths(
                raw_dir=str(root / "raw"),
                processed_dir=str(root / "processed"),
                inbox_dir=str(root / "inbox"),
            ),
            "pseudonyms": keys,
            "raw_format": RawFormat(),
            "review_database": ReviewDatabase(
                url=f"sqlite:///{root / 'review.db'}", reader_labels=mode
            ),
        },
        run_config=dg.RunConfig(
            {
                "mpr_images": {"config": {"image_size": 32, "workers": 1}},
                "patient_splits": {"config": SPLIT},
            }
        ),
    )
    assert result.success
    return result


def test_a_corrected_inbox_patient_trains_and_moves_no_one(tmp_path, tiny_cohort):
    raw, inbox = tmp_path / "raw", tmp_path / "inbox"
    shutil.copytree(tiny_cohort, raw)
    for leaving in ("reports/{}.txt", "volumes/{}.nii.gz", "centrelines/{}.json"):
        (raw / leaving.format(MOVED)).unlink()
    inbox.mkdir()
    study = shutil.move(raw / "mpr" / MOVED, inbox / "75309429")  # named by an MRN
    secret = PseudonymKey(key_file=str(tmp_path / "key")).secret_pseudonyms()
    patient = secret(folder_patient_key(study))
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.add_user("rea", "reader", "a long enough secret")
    _, session = store.login("rea", "a long enough secret")
    read = {"LAD": "significant", "LCX": "no_stenosis", "RCA": "non_significant"}
    store.record_verdict(
        session,
        Verdict(
            patient, "rea", 0.0, "1", "2", False, False, "3", read, "", study_id(study, secret)
        ),
    )
    layout = layout_of(tmp_path / "processed")

    run(tmp_path, "off")
    alone = pd.read_parquet(layout.splits)
    assert patient not in set(pd.read_parquet(layout.manifest).patient_id)

    result = run(tmp_path, "corrected")
    manifest = pd.read_parquet(layout.manifest)
    assert len(manifest[manifest.patient_id == patient]) > 0  # the inbox study, ingested
    assert "75309429" not in manifest.to_csv()
    labels = pd.read_parquet(layout.branch_labels).query("patient_id == @patient")
    assert dict(zip(labels.branch, labels.stenosis_class, strict=True)) == read
    assert set(labels.source) == {"reader"} and labels.pct_low.isna().all()
    splits = pd.read_parquet(layout.splits).set_index("patient_id")
    assert (splits.split[patient], splits.origin[patient]) == ("train", "reader")
    kept = splits.drop(index=patient).reset_index()
    assert kept.drop(columns="origin").equals(alone.drop(columns="origin"))
    shown = {
        m.asset_key.path[-1]: m.metadata
        for node in ("reader_labels", "mpr_images", "patient_splits")
        for m in result.asset_materializations_for_node(node)
    }
    assert shown["reader_labels"]["patients"].value == 1
    (used,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "reader_labels_all_used"
    ]
    assert used.passed and used.metadata["left_out"].value == 0
    assert shown["mpr_manifest"]["reader_labelled_studies"].value == 1
    assert shown["patient_splits"]["patients_by_origin"].value == {"report": 3, "reader": 1}

    # the key holder (not the review app) maps the pseudonym back to the inbox study
    env = {
        "CASS_INBOX_DIR": str(inbox),
        "CASS_PSEUDONYM_KEY_FILE": str(tmp_path / "key"),
        "CASS_PSEUDONYM_KEY": "",
    }
    found = CliRunner().invoke(main, ["inspect", str(inbox), "--patient", patient], env=env)
    assert found.exit_code == 0, found.output
    assert f"{patient}  {study_id(study, secret)}  {study}" in found.output

"""`cass train --folds K`: one parent MLflow run, a nested run per fold, each fold's and the
pooled out-of-fold figures; the test split never read, nothing registered."""

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cass_pipeline.cli import main
from cass_pipeline_tests.helpers import TINY_MODEL, local_tracking, write_training_data

pytestmark = pytest.mark.slow  # trains two tiny models


def test_two_folds_give_nested_runs_and_pooled_out_of_fold_figures(tmp_path):
    processed = write_training_data(tmp_path / "data" / "processed")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()]
    env = {"CASS_DATA_DIR": str(tmp_path / "data"), "MLFLOW_TRACKING_URI": uri}
    result = CliRunner().invoke(main, ["train", "--folds", "2", *options], env=env)
    assert result.exit_code == 0, result.output
    assert "| patient | f1_weighted |" in result.output and "fold 2/2" in result.output
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=10
    )
    (parent,) = [r for r in runs if r.info.run_name == "cross-validation-2"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["fold-0", "fold-1"]
    metrics = parent.data.metrics
    assert {"cv_patient_f1_weighted_mean", "cv_patient_f1_weighted_std"} <= set(metrics)
    assert 0 <= metrics["cv_pooled_patient_f1_weighted"] <= 1
    oof = pd.read_csv(
        client.download_artifacts(
            parent.info.run_id, "cross_validation/out_of_fold_predictions.csv", str(tmp_path)
        )
    )
    splits = pd.read_parquet(processed / "model" / "splits.parquet")
    test = set(splits.patient_id[splits.split == "test"])
    trained = set(splits.patient_id[splits.split != "test"])
    assert set(oof.patient_id) == trained and not set(oof.patient_id) & test
    assert oof.groupby("patient_id").fold.nunique().max() == 1  # each patient out of one fold
    assert client.search_registered_models() == []  # figures only


def test_the_asset_shows_the_fold_figures_and_stays_out_of_demo_and_retraining(tmp_path):
    import dagster as dg

    from cass_pipeline.definitions import defs
    from cass_pipeline.defs.assets import model
    from cass_pipeline.defs.resources import CassPaths

    root = write_training_data(tmp_path / "processed")
    result = dg.materialize(
        [model.cross_validation],
        resources={
            "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(root)),
            "mlflow_tracking": local_tracking(tmp_path, "cv-test"),
        },
        run_config=dg.RunConfig({"cross_validation": {"config": {**TINY_MODEL, "folds": 2}}}),
    )
    metadata = result.asset_materializations_for_node("cross_validation")[0].metadata
    assert "| segment | accuracy |" in metadata["figures"].value
    assert 0 <= metadata["pooled_patient_f1_weighted"].value <= 1
    for job in ("demo", "retrain"):
        keys = defs.resolve_job_def(job).asset_layer.executable_asset_keys
        assert dg.AssetKey("cross_validation") not in keys


def test_the_fold_networks_registered_as_one_ensemble_serve_one_prediction(tmp_path):
    from cass_pipeline.runs.serving import example_request
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline.settings import CassSettings

    write_training_data(tmp_path / "data" / "processed")
    env = {
        "CASS_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()]
    grades = ["--target=soft_grade", "--aggregation=attention", "--tta=flip"]
    command = ["train", "--folds", "2", "--ensemble", *options, *grades]
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 0, result.output
    assert "| cad_rads | kappa_linear |" in result.output
    assert "registered the 2 fold networks as version 1 (challenger)" in result.output
    loaded = Tracking.from_settings(CassSettings.from_env(env)).load("challenger")
    bundle = loaded.predictor.bundle
    assert bundle.members == ("fold-0", "fold-1") and bundle.tta == "flip"
    assert bundle.calibration.fitted_on.startswith("out-of-fold predictions of 2 folds")
    assert loaded.predictor.engine.name == "onnxruntime x2"
    table = loaded.predictor.predict_frame(example_request(32))
    assert table.loc[table.level == "patient", "cad_rads"].notna().all()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    artifacts = {a.path for a in client.list_artifacts(loaded.run_id)}
    assert {"splits.csv", "config.json"} <= artifacts  # what the leak checks read

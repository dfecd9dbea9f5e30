"""Locations and resources resolve from the environment, with absolute defaults."""

from pathlib import Path

import mlflow
import pandas as pd

from cass_pipeline.defs.resources import CassPaths, MlflowTracking
from cass_pipeline.layout import DataLayout
from cass_pipeline.settings import CassSettings, project_root


def test_defaults_live_under_the_project_data_folder():
    settings = CassSettings.from_env({})
    data = project_root() / "data"
    assert settings.data_dir == data
    assert settings.raw_dir == data / "raw"
    assert settings.dagster_home == data / "dagster_home"
    assert settings.tracking_uri == f"sqlite:///{data}/mlflow/mlflow.db"
    assert settings.tracking_uri.startswith("sqlite:////")  # absolute, never cwd-relative
    assert settings.artifact_root == (data / "mlflow" / "artifacts").as_uri()


def test_environment_overrides_every_location(tmp_path):
    settings = CassSettings.from_env(
        {
            "CASS_DATA_DIR": str(tmp_path),
            "CASS_RAW_DIR": str(tmp_path / "hospital_export"),
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
            "CASS_MLFLOW_EXPERIMENT": "site-b",
        }
    )
    assert settings.raw_dir == tmp_path / "hospital_export"
    assert settings.processed_dir == tmp_path / "processed"
    assert settings.mlflow_dir == tmp_path / "mlflow"
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.experiment_name == "site-b"


def test_paths_resource_builds_from_default_and_overridden_settings(tmp_path):
    default = CassPaths.from_settings(CassSettings.from_env({}))
    assert default.raw == project_root() / "data" / "raw"
    custom = CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "out"))
    assert custom.layout.manifest == tmp_path / "out" / "images" / "current" / "manifest.parquet"
    assert (
        custom.layout.ground_truth("views") == tmp_path / "raw" / "ground_truth" / "views.parquet"
    )
    assert CassSettings.from_env({"CASS_DATA_DIR": str(tmp_path)}).layout == DataLayout(
        tmp_path / "raw", tmp_path / "processed"
    )


def test_mlflow_resource_logs_a_run_and_reads_it_back(tmp_path):
    settings = CassSettings.from_env({"CASS_DATA_DIR": str(tmp_path)})
    tracking = MlflowTracking.from_settings(settings)
    with tracking.start_run("unit-test", tags={"dagster_run_id": "abc"}) as run:
        mlflow.log_param("arch", "shufflenet_v2_x1_0")
        mlflow.log_metric("val_f1_weighted", 0.5, step=1)
        (tmp_path / "note.txt").write_text("hello")
        mlflow.log_artifact(str(tmp_path / "note.txt"))

    stored = tracking.client().get_run(run.info.run_id)
    assert stored.data.params == {"arch": "shufflenet_v2_x1_0"}
    assert stored.data.metrics == {"val_f1_weighted": 0.5}
    assert stored.data.tags["dagster_run_id"] == "abc"
    experiment = tracking.client().get_experiment(stored.info.experiment_id)
    assert experiment.name == "cass-stenosis"
    artifacts = Path(stored.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlflow" / "artifacts")
    assert (artifacts / "note.txt").read_text() == "hello"
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()


def test_a_folder_the_generator_did_not_write_gets_the_secret_key(tmp_path):
    from cass_pipeline.defs.resources import PseudonymKey
    from cass_pipeline.domain.privacy import SYNTHETIC_COHORT_KEY, pseudonymise

    real = tmp_path / "real"
    (real / "mpr" / "CASE-0001").mkdir(parents=True)
    (real / "cohort.json").write_text('{"generator": "cass synth"}')  # a leftover summary
    keys = PseudonymKey(key_file=str(tmp_path / "key")).pseudonyms_for(real)
    secret = (tmp_path / "key").read_bytes().strip()
    assert secret != SYNTHETIC_COHORT_KEY and len(secret) == 64
    assert keys("CASE-0001") == pseudonymise("CASE-0001", secret)


def test_a_preview_shows_a_report_as_one_short_line():
    from cass_pipeline.defs.presentation import preview_markdown

    report = "FINDINGS:\nLAD: 70% stenosis.\n" + "The RCA is normal. " * 20
    table = pd.DataFrame({"patient_id": ["P1"], "text": [report], "n_chars": [len(report)]})
    (row,) = [line for line in preview_markdown(table).value.splitlines() if "P1" in line]
    assert "FINDINGS: LAD: 70% stenosis. The RCA" in row and "…" in row and len(row) < 140

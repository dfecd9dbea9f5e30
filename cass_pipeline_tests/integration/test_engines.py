"""The tiny pipeline on the engines a group runs past one machine: Dagster on PostgreSQL with
the Dask executor (separate worker processes), training logging to an MLflow server on
PostgreSQL over HTTP, and the champion looked up over HTTP by `cass predict`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from cass_pipeline.defs.assets.model import NOT_ON_REQUEST
from cass_pipeline_tests.helpers import TINY_MODEL
from cass_pipeline_tests.servers import ROOT, mlflow_server, postgres_server

TINY_RUN = {
    "ops": {
        "raw_cohort": {"config": {"preset": "tiny", "n_patients": 12, "workers": 1}},
        "mpr_images": {"config": {"image_size": 32}},
        "patient_splits": {
            "config": {"train": 0.6, "validation": 0.2, "test": 0.2, "floor_per_class": 0}
        },
        "stenosis_model": {"config": TINY_MODEL},
        "evaluation_report": {"config": {"bootstrap": 20}},
        "explanations": {"config": {"per_class": 1, "steps": 4}},
    }
}


@pytest.mark.slow
def test_tiny_pipeline_on_postgres_dask_and_an_mlflow_server(tmp_path, monkeypatch):
    from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

    with (
        postgres_server(tmp_path / "pg") as postgres,
        mlflow_server(postgres, "mlflow", tmp_path) as tracking_uri,
    ):
        postgres.create_database("dagster")
        home = tmp_path / "dagster_home"
        home.mkdir()
        instance_yaml = [
            ROOT / "config" / "dagster_instance.yaml",
            ROOT / "deploy" / "dagster-postgres.yaml",
        ]
        (home / "dagster.yaml").write_text("\n".join(p.read_text() for p in instance_yaml))
        run_config = tmp_path / "run.yaml"
        run_config.write_text(
            yaml.safe_dump(
                TINY_RUN | yaml.safe_load((ROOT / "deploy" / "dask-local.yaml").read_text())
            )
        )
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env = {  # MLflow exports the URIs earlier tests set; this run must see only its own
            **inherited,
            **postgres.env("dagster"),
            "DAGSTER_HOME": str(home),
            "CASS_DATA_DIR": str(tmp_path / "data"),
            "CASS_DAGSTER_EXECUTOR": "dask",
            "MLFLOW_TRACKING_URI": tracking_uri,
            "DASK_DISTRIBUTED__WORKER__DAEMON": "False",  # steps start process pools of their own
        }
        bin_dir = Path(sys.executable).parent
        run = subprocess.run(
            [bin_dir / "dagster", "asset", "materialize", "-m", "cass_pipeline.definitions",
             "--select", NOT_ON_REQUEST, "-c", run_config],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-4000:]

        for name, value in postgres.env("dagster").items():
            monkeypatch.setenv(name, value)  # the instance file reads them
        instance = DagsterInstance.from_config(str(home))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == DagsterRunStatus.SUCCESS
        events = instance.all_logs(record.dagster_run.run_id)
        events = [e.dagster_event for e in events if e.is_dagster_event]
        (run_pid,) = {e.pid for e in events if e.event_type == DagsterEventType.RUN_START}
        step_pids = {e.pid for e in events if e.step_key and e.pid is not None}
        # The steps ran on the cluster's worker processes, not in the run's own process.
        # How many worker processes they show depends on Dask, not on CASS: it places a chain
        # of dependent steps by data locality (a fresh-clone CI saw one worker), and a busy
        # machine saw a third pid (a worker the nanny restarted).
        assert step_pids and run_pid not in step_pids
        manifest = instance.get_latest_materialization_event(AssetKey("mpr_manifest"))
        metadata = manifest.asset_materialization.metadata
        assert metadata["ingested_on"].value == "Dask cluster of 2 workers"  # patients fan out

        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)  # not an earlier test's
        champion = client.get_model_version_by_alias("cass-stenosis", "champion")
        run_artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
        assert {"config.json", "splits.csv"} <= run_artifacts  # served by the server

        patient = next((tmp_path / "data" / "raw" / "mpr").iterdir())
        predict = subprocess.run(
            [bin_dir / "cass", "predict", patient, "--model", "models:/cass-stenosis@champion",
             "--out", tmp_path / "prediction", "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert predict.returncode == 0, predict.stderr[-3000:]
        document = json.loads(predict.stdout)
        assert document["model"]["version"] == int(champion.version)

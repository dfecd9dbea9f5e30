"""Two CPU processes under torchrun end identical; each training run is tracked in MLflow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cass_pipeline.domain.device import training_threads
from cass_pipeline.domain.model.train import loader_workers
from cass_pipeline.layout import DataLayout
from cass_pipeline.runs.tracking import Tracking
from cass_pipeline.runs.training import run_training
from cass_pipeline_tests.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains models in several processes

ROOT = Path(__file__).parents[2]


def test_two_gloo_processes_end_with_identical_weights(training_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "cass_pipeline_tests.ddp_worker",
            str(training_data),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_each_run_is_logged_registered_and_a_config_change_shows(training_data, tmp_path):
    tracking = Tracking(
        f"sqlite:///{tmp_path}/mlflow.db", "cass-test", (tmp_path / "artifacts").as_uri()
    )
    layout = DataLayout(tmp_path / "raw", training_data)
    first = run_training(layout, tiny_config(lr=1e-3), tracking, {"dagster_run_id": "run-1"})
    progress: list[str] = []
    second = run_training(
        layout,
        tiny_config(lr=3e-4),
        tracking,
        {"dagster_run_id": "run-2"},
        progress=progress.append,
    )
    assert len(progress) == 1 and progress[0].startswith("epoch 1/1: train loss ")
    client = tracking.client()
    runs = [client.get_run(s.run_id) for s in (first, second)]
    assert [r.data.params["train.lr"] for r in runs] == ["0.001", "0.0003"]
    assert runs[0].data.params["splits_hash"] == runs[1].data.params["splits_hash"]
    assert runs[1].data.params["weights_used"] == "none"
    assert runs[1].data.params["cpu_kernels"] == "native"  # tests run with the machine's own
    assert runs[1].data.params["thread_wait"] == "sleep"
    threads = training_threads(loader_workers(tiny_config())) or "OMP_NUM_THREADS"
    assert runs[1].data.params["cpu_threads"] == str(threads)  # sized with the loader workers
    assert runs[1].data.tags["dagster_run_id"] == "run-2"
    assert "val_branch_f1" in runs[1].data.metrics
    artifacts = {a.path for a in client.list_artifacts(second.run_id)}
    assert {"config.json", "class_map.json", "splits.csv", "curves.png"} <= artifacts
    assert (first.model_version, second.model_version) == (1, 2)
    versions = tracking.model_versions()
    assert versions[0] == {"version": 2, "run_id": second.run_id, "aliases": ["challenger"]}
    assert versions[1]["aliases"] == []
    assert runs[1].data.metrics["onnx_max_probability_difference"] <= 1e-4
    import mlflow.pyfunc

    tracking.activate()
    served = mlflow.pyfunc.load_model("models:/cass-stenosis@challenger")
    bundle = served.unwrap_python_model().predictor.bundle
    assert bundle.image_size == 32 and bundle.arch == "shufflenet_v2_x0_5"
    assert bundle.classes == ("no_stenosis", "non_significant", "significant")


def test_a_model_trained_with_test_time_augmentation_serves_with_it(training_data, tmp_path):
    from cass_pipeline.domain.model.inference import TestTimeAugmented
    from cass_pipeline.runs.training import load_views

    tracking = Tracking(
        f"sqlite:///{tmp_path}/mlflow.db", "cass-test", (tmp_path / "artifacts").as_uri()
    )
    layout = DataLayout(tmp_path / "raw", training_data)
    summary = run_training(layout, tiny_config(tta="flip"), tracking)
    loaded = tracking.load(str(summary.model_version))
    assert loaded.predictor.bundle.tta == "flip"
    engine = loaded.predictor.engine
    assert isinstance(getattr(engine, "engine", engine), TestTimeAugmented)
    views = load_views(layout)
    test = views[views.split == "test"].head(4).reset_index(drop=True)
    scored = loaded.predictor.score_views(test, layout.images)
    assert len(scored) == 4 and scored.p_significant.between(0, 1).all()

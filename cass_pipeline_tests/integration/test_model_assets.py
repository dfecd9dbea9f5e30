"""Split and training assets: the leak check, and DDP training launched through Dagster Pipes."""

import dagster as dg
import pandas as pd
import pytest

from cass_pipeline.defs.assets import model
from cass_pipeline.defs.resources import CassPaths
from cass_pipeline_tests.helpers import TINY_MODEL, local_tracking


def resources(root, tmp_path):
    return {
        "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(root)),
        "mlflow_tracking": local_tracking(tmp_path, "pipes-test"),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


def test_split_check_catches_a_planted_leak(training_data, tmp_path):
    paths = CassPaths(raw_dir=str(tmp_path), processed_dir=str(training_data))
    context = dg.build_asset_check_context()
    assert model.no_patient_in_two_splits(context, paths).passed
    splits = pd.read_parquet(paths.layout.splits)
    leaked = pd.concat([splits, splits.iloc[[0]].assign(split="test")])
    leaked.to_parquet(paths.layout.splits)
    check = model.no_patient_in_two_splits(context, paths)
    assert not check.passed
    assert check.metadata["patients_in_two_splits"].value == 1


@pytest.mark.slow
def test_two_process_training_through_pipes(training_data, tmp_path):
    config = {**TINY_MODEL, "nproc": 2}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [model.stenosis_model],
        resources=resources(training_data, tmp_path),
        run_config=dg.RunConfig({"stenosis_model": {"config": config}}),
        instance=instance,
    )
    assert result.success
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("epoch 1/1: train loss ") for m in logged)  # rank 0, through Pipes
    metadata = result.asset_materializations_for_node("stenosis_model")[0].metadata
    assert metadata["model_version"].value == 1
    assert metadata["weights_used"].value == "none"

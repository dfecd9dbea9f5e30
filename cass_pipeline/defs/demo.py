"""The `demo` job: the whole pipeline on the synthetic demo cohort with the demo's run config
(demo_run.yaml beside this file), in one process; what `make run` runs."""

from pathlib import Path

import dagster as dg
import yaml

from cass_pipeline.defs.assets.model import ON_REQUEST

DEMO_RUN_CONFIG = Path(__file__).with_name("demo_run.yaml")

demo_job = dg.define_asset_job(
    "demo",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("prediction") - ON_REQUEST,
    config=yaml.safe_load(DEMO_RUN_CONFIG.read_text()),
    executor_def=dg.in_process_executor,
    description="Synthetic demo cohort to champion model with the demo's settings "
    "(8 epochs at lr 2e-3, 128 px): `make run` in the UI.",
)

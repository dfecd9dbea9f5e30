"""The one `dagster.Definitions` of the CASS code location (loaded by workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from cass_pipeline.defs.assets import (
    cohort,
    evaluation,
    external,
    imaging,
    model,
    prediction,
    reports,
    review,
)
from cass_pipeline.defs.demo import demo_job
from cass_pipeline.defs.executors import executor_named
from cass_pipeline.defs.resources import (
    CassPaths,
    DicomResults,
    Inbox,
    MlflowTracking,
    PseudonymKey,
    RawFormat,
    ReviewDatabase,
)
from cass_pipeline.settings import CassSettings

MODULES = [cohort, reports, imaging, model, evaluation, external, prediction, review]


def build_definitions(settings: CassSettings | None = None) -> dg.Definitions:
    """Assets, checks, jobs, schedules and resources, with locations from `settings`."""
    settings = settings or CassSettings.from_env()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(MODULES),
        asset_checks=dg.load_asset_checks_from_modules(MODULES),
        jobs=[demo_job, model.retrain_job, prediction.predict_patient_job, prediction.worklist_job],
        schedules=[model.weekly_retrain],
        sensors=[
            prediction.inbox_sensor,
            prediction.worklist_sensor,
            prediction.worklist_failure_sensor,
        ],
        executor=executor_named(settings.executor),
        resources={
            "paths": CassPaths.from_settings(settings),
            "mlflow_tracking": MlflowTracking.from_settings(settings),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "pseudonyms": PseudonymKey.from_settings(settings),
            "inbox": Inbox.from_settings(settings),
            "dicom_results": DicomResults.from_settings(settings),
            "raw_format": RawFormat.from_settings(settings),
            "review_database": ReviewDatabase.from_settings(settings),
        },
    )


defs = build_definitions()

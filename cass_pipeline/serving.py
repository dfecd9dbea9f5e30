"""Where models registered before the MLflow wiring moved to `runs/` find their pyfunc class:
the entry file logged with each of them runs `from cass_pipeline.serving import StenosisModel`."""

from cass_pipeline.runs.serving import StenosisModel

__all__ = ["StenosisModel"]

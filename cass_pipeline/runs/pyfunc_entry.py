"""MLflow models-from-code entry: `mlflow.pyfunc.log_model(python_model=<this file>)` stores
this file with the model, and loading runs it (no pickled object is deserialised)."""

import mlflow.models

from cass_pipeline.runs.serving import StenosisModel

mlflow.models.set_model(StenosisModel())

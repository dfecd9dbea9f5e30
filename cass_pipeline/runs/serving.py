"""The registered model as an MLflow pyfunc: a request DataFrame in, the prediction table out.

`mlflow models serve -m models:/cass-stenosis@champion` and `mlflow.pyfunc.load_model` run
this class; it holds a `Predictor` built from the model's bundle folder, so REST, the CLI,
Dagster and evaluation share one inference path. `model_config` picks the engine:
`{"engine": "onnxruntime"}` (default, CPU) or `{"engine": "pytorch", "device": "cuda"}`.
The model is logged from code (`pyfunc_entry.py`), not as a pickled object.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from cass_pipeline.domain.model.calibration import PROBABILITY_COLUMNS
from cass_pipeline.domain.model.targets import GRADE_PROBABILITY_COLUMNS
from cass_pipeline.domain.prediction.config import PredictSettings
from cass_pipeline.domain.prediction.predictor import INPUT_COLUMNS, Predictor
from cass_pipeline.domain.prediction.rollup import PREDICTION_COLUMNS

BUNDLE_ARTIFACT = "bundle"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
DEFAULT_MODEL_CONFIG = {"engine": PredictSettings.engine, "device": "cpu"}
INTEGER_COLUMNS = ("view_index", "views_used")
DOUBLE_COLUMNS = (*PROBABILITY_COLUMNS, *GRADE_PROBABILITY_COLUMNS, "significant_score")
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec(
                "binary" if name == "image" else "long" if name == "view_index" else "string",
                name,
                required=name == "image",
            )
            for name in INPUT_COLUMNS
        ]
    ),
    outputs=Schema(
        [
            ColSpec(
                "double"
                if name in DOUBLE_COLUMNS
                else "long"
                if name in INTEGER_COLUMNS
                else "boolean"
                if name == "refer"
                else "string",
                name,
                required=name in ("patient", "level"),
            )
            for name in PREDICTION_COLUMNS
        ]
    ),
)


class StenosisModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of a CASS model (see the module docstring)."""

    def load_context(self, context) -> None:
        config = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}
        self.predictor = Predictor.load(
            Path(context.artifacts[BUNDLE_ARTIFACT]), config["engine"], config["device"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return json_ready(self.predictor.predict_frame(model_input))


def json_ready(table: pd.DataFrame) -> pd.DataFrame:
    """Empty cells as None (JSON null, not NaN) and whole numbers as int."""
    table = table.astype(object).where(table.notna(), None)
    for name in INTEGER_COLUMNS:
        values = [None if v is None else int(v) for v in table[name]]
        table[name] = pd.Series(values, index=table.index, dtype=object)
    return table


def example_request(size: int, views: int = 4) -> pd.DataFrame:
    """A request of synthetic views (no patient data): a bright vessel band on noise, as PNG."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(views):
        image = rng.integers(30, 90, (size, size), dtype=np.uint8)
        image[:, size * 3 // 8 : size * 5 // 8] = 200
        rows.append(
            {
                "image": cv2.imencode(".png", image)[1].tobytes(),
                "branch": "LAD",
                "view_index": index,
                "source": f"example/{index:03d}.png",
            }
        )
    return pd.DataFrame(rows)

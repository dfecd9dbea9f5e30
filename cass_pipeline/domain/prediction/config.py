"""Which registered model scores a patient, and on which engine, declared once for
`cass predict`, the REST service and the inbox asset. Pure: no torch, so the CLI starts fast."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from cass_pipeline.domain.evaluation.config import CHAMPION
from cass_pipeline.domain.options import option
from cass_pipeline.settings import REGISTERED_MODEL_NAME

EngineName = typing.Literal["onnxruntime", "pytorch"]
ENGINES: tuple[str, ...] = typing.get_args(EngineName)


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


@dataclass(frozen=True)
class PredictSettings:
    """The model, the engine, and Integrated Gradients steps for the decisive views."""

    model: str = option(
        f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION}",
        "models:/name@alias, models:/name/version, an alias or a version number",
    )
    engine: EngineName = option("onnxruntime", "onnxruntime (CPU) or pytorch")
    explain_steps: int = option(
        0, "Integrated Gradients steps for the decisive views (0: none)", min=0
    )

"""Prediction for a patient: export files in, view, branch, artery and patient classes out.

`Predictor` is the one inference path over a registered model's folder (`bundle.py`):
evaluation, `cass predict`, the REST service and the Dagster asset call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from cass_pipeline.domain.imaging.pixel_text import PixelText, check_pixels, first_middle_last
from cass_pipeline.domain.imaging.views import SourceFile, assign_branches, read_views
from cass_pipeline.domain.model.aggregation import decide_branches
from cass_pipeline.domain.model.calibration import PROBABILITY_COLUMNS
from cass_pipeline.domain.model.inference import (
    Engine,
    OnnxEngine,
    TorchEngine,
    predict_outputs,
    predict_probabilities,
    view_outputs,
)
from cass_pipeline.domain.prediction.bundle import ONNX_FILE, ModelBundle, torch_network
from cass_pipeline.domain.prediction.config import PredictSettings, check_engine
from cass_pipeline.domain.prediction.rollup import empty_table, roll_up

#: A model's view predictions on the test split: what evaluation and promotion read.
VIEW_PREDICTION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("artery", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("label", pa.int8()),
        ("pred", pa.int8()),
        ("branch_pred", pa.int8()),
        *((column, pa.float32()) for column in PROBABILITY_COLUMNS),
        ("model_version", pa.int32()),
    ]
)
INPUT_COLUMNS = ("image", "patient", "branch", "series_name", "view_index", "source")


#: Views of a branch that `report.png` shows, evenly spaced (`strip_views`).
STRIP_VIEWS = 12


def strip_views(count: int) -> list[int]:
    """The positions of the views `report.png` shows of a branch with `count` views."""
    return np.unique(
        np.linspace(0, count - 1, min(count, STRIP_VIEWS)).round().astype(int)
    ).tolist()


@dataclass
class PatientPrediction:
    """The prediction table of one patient, the cleaned views it was made from, what OCR read
    on the views an output shows, and the identifiers it looked for (in memory only)."""

    patient: str
    table: pd.DataFrame
    images: dict[str, np.ndarray]
    pixel_text: PixelText = field(default_factory=PixelText)
    identifiers: frozenset[str] = frozenset()

    def rows(self, level: str) -> pd.DataFrame:
        return self.table[self.table.level == level].reset_index(drop=True)


class Predictor:
    """The bundle's cleanup, branch assignment, network and roll-up, in that order."""

    def __init__(self, bundle: ModelBundle, engine: Engine, network: Callable[[], nn.Module]):
        self.bundle = bundle
        self.engine = engine
        self._network = network

    @classmethod
    def load(
        cls, folder: Path, engine: str = PredictSettings.engine, device: str = "cpu"
    ) -> Predictor:
        """A predictor on ONNX Runtime (CPU) or PyTorch (`device`: cpu, cuda, ...), giving
        the bundle's calibrated probabilities."""
        check_engine(engine)
        bundle = ModelBundle.read(folder)
        if engine == "onnxruntime":
            runner: Engine = OnnxEngine(folder / ONNX_FILE)
        else:
            runner = TorchEngine(torch_network(folder, bundle.arch), torch.device(device))
        return cls(
            bundle, bundle.calibration.scaled(runner), lambda: torch_network(folder, bundle.arch)
        )

    def network(self) -> nn.Module:
        """The PyTorch network (Integrated Gradients need gradients)."""
        return self._network()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 3) of views already cleaned with this bundle's cleanup."""
        return predict_probabilities(self.engine, images)

    def score_views(self, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
        """Stored (already cleaned) views with pred, the probabilities and `branch_pred`, the
        class of their branch; what evaluation scores."""
        probabilities, embeddings = view_outputs(self.engine, views, store_root)
        scored = views.reset_index(drop=True).assign(
            pred=probabilities.argmax(1),
            **dict(zip(PROBABILITY_COLUMNS, probabilities.T, strict=True)),
        )
        return scored.assign(branch_pred=decide_branches(scored, embeddings, self.bundle.attention))

    def predict_files(
        self,
        files: Iterable[SourceFile],
        patient: str,
        threads: int = 2,
        on_file: Callable[[], None] | None = None,
        identifiers: Iterable[str] = (),
    ) -> PatientPrediction:
        """Read, clean, assign to branches, score and roll up one patient's files; OCR reads
        the views `report.png` would show for the headers' `identifiers` and those given."""
        views, rejects = read_views(files, patient, self.bundle.ingest, threads, on_file)
        by_branch, more = assign_branches(views, patient, self.bundle.ingest)
        rejects += more
        images = {b: np.stack([v.image for v in by_branch[b]]) for b in sorted(by_branch)}
        known = frozenset(identifiers).union(*(v.identifiers for v in views))
        shown = {
            f"{branch}/{k}": stack[k]
            for branch, stack in images.items()
            for k in sorted({*strip_views(len(stack)), *first_middle_last(len(stack))})
        }
        pixel_text = check_pixels(shown, known)
        view_rows, decided = [], None
        if images:
            stacked = np.concatenate(list(images.values()))
            probabilities, embeddings = predict_outputs(self.engine, stacked)
            rows = iter(probabilities)
            for branch in images:
                for index, view in enumerate(by_branch[branch]):
                    p = next(rows)
                    view_rows.append(
                        {
                            "view_index": index,
                            "source": view.source_path,
                            "branch": branch,
                            "stenosis_class": self.bundle.classes[int(p.argmax())],
                            **dict(zip(PROBABILITY_COLUMNS, map(float, p), strict=True)),
                        }
                    )
            branches = [row["branch"] for row in view_rows]
            scored = pd.DataFrame(
                {"patient_id": patient, "branch": branches, "pred": probabilities.argmax(1)}
            )
            classes = decide_branches(scored, embeddings, self.bundle.attention)
            decided = {branch: int(c) for branch, c in zip(branches, classes, strict=True)}
        table = roll_up(patient, pd.DataFrame(view_rows), rejects, self.bundle, decided)
        return PatientPrediction(patient, table, images, pixel_text, known)

    def predict_frame(self, frame: pd.DataFrame, threads: int = 2) -> pd.DataFrame:
        """The prediction table for a request: one row per view with `image` (DICOM, PNG or
        JPEG bytes) and optionally `patient`, `branch` or `series_name`, `view_index`,
        `source`."""
        check_request_columns(list(frame.columns))
        frame = frame.reset_index(drop=True)
        patients = frame["patient"] if "patient" in frame else pd.Series("patient", frame.index)
        tables = []
        for patient, rows in frame.groupby(patients.fillna("patient").astype(str), sort=True):
            records = zip(rows.index, rows.to_dict("records"), strict=True)
            files = [request_file(i, row) for i, row in records]
            tables.append(self.predict_files(files, patient, threads).table)
        return pd.concat(tables, ignore_index=True) if tables else empty_table()


class RequestColumnsError(ValueError):
    """A request's columns the predictor cannot take; `unknown` names those it does not know."""

    def __init__(self, message: str, unknown: tuple[str, ...] = ()):
        super().__init__(message)
        self.unknown = unknown


def check_request_columns(columns: list[str]) -> None:
    """Refuse a request with columns the predictor does not know (named, 40 characters of
    each at most) or without `image`."""
    unknown = tuple(c for c in columns if c not in INPUT_COLUMNS)
    if unknown:
        names = [c[:40] for c in unknown[:10]]
        raise RequestColumnsError(
            f"unknown request columns {names}; expected some of {list(INPUT_COLUMNS)}", unknown
        )
    if "image" not in columns:
        raise RequestColumnsError("the request has no 'image' column")


def present(row: dict, key: str):
    """A request value, None when the column is absent or the cell empty."""
    value = row.get(key)
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


def request_file(index: int, row: dict) -> SourceFile:
    """A request row as a source file; its series is the stated branch or series name."""
    data = row["image"]
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"row {index}: 'image' must be bytes (base64 in JSON)")
    branch, series = present(row, "branch"), present(row, "series_name")
    view_index = present(row, "view_index")
    return SourceFile(
        path=str(present(row, "source") or f"row-{index}"),
        series=str(series or branch or ""),
        data=bytes(data),
        branch=None if branch is None else str(branch),
        view_index=None if view_index is None else int(view_index),
        stated=True,
    )

"""Where the network runs, and its predictions on cleaned views.

PyTorch (training, GPUs, gradients) and ONNX Runtime (CPU serving) both take the normalised
batch that `to_model_input` makes and return logits; validation during training, evaluation,
serving and `cass explain` all turn views into probabilities through `predict_probabilities`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.network import to_model_input

CPU = torch.device("cpu")
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"


class Engine(Protocol):
    """Runs the network on a normalised float32 batch (N, 3, H, W) and returns logits (N, 3)."""

    name: str

    def logits(self, batch: np.ndarray) -> np.ndarray: ...


class TorchEngine:
    """The PyTorch module, channels_last, on `device`."""

    name = "pytorch"

    def __init__(self, model: nn.Module, device: torch.device = CPU):
        self.model = model.eval().to(device)
        self.device = device

    def logits(self, batch: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(batch).to(self.device)
        with torch.no_grad():
            batch = tensor.contiguous(memory_format=torch.channels_last)
            return self.model(batch).float().cpu().numpy()


class OnnxEngine:
    """An exported network in ONNX Runtime on the CPU, using every core by default."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})[0]


def softmax(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class probabilities of logits (N, 3), computed the same way for every engine."""
    return torch.softmax(torch.as_tensor(logits).float(), 1).numpy()


def predict_probabilities(engine: Engine, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, 3) for cleaned uint8 views (N, H, W)."""
    out = [
        softmax(engine.logits(to_model_input(images[start : start + batch_size]).numpy()))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def export_onnx(model: nn.Module, size: int, path: Path) -> None:
    """The network as ONNX (batch size free, `size` x `size` input) at `path`."""
    model = model.eval().to(CPU)
    example = torch.zeros(2, 3, size, size)  # batch 2: a batch of 1 would be fixed in the graph
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        verbose=False,
    )
    program.save(str(path))


def largest_difference(p: np.ndarray, q: np.ndarray) -> tuple[float, int]:
    """Largest absolute difference of two engines' probabilities (N, 3) of the same views,
    and how many views they classify differently."""
    if not len(p):
        return 0.0, 0
    return float(np.abs(p - q).max()), int((p.argmax(1) != q.argmax(1)).sum())


def view_probabilities(
    engine: Engine, views: pd.DataFrame, store_root: Path, batch_size: int = 64
) -> np.ndarray:
    """Probabilities for manifest rows, reading the image store one batch at a time."""
    dataset = ViewDataset(views.reset_index(drop=True), store_root)
    chunks = [
        predict_probabilities(
            engine,
            np.stack(
                [dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))]
            ),
            batch_size,
        )
        for start in range(0, len(dataset), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3), np.float32)


def predict_views(engine: Engine, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
    """`views` with pred and p_no_stenosis, p_non_significant, p_significant columns."""
    probabilities = view_probabilities(engine, views, store_root)
    return views.reset_index(drop=True).assign(
        pred=probabilities.argmax(1),
        p_no_stenosis=probabilities[:, 0],
        p_non_significant=probabilities[:, 1],
        p_significant=probabilities[:, 2],
    )

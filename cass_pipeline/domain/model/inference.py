"""Predictions of a trained model on cleaned views (the same input transform as training).

Validation during training, test predictions, champion re-evaluation and `cass explain` all
go through `predict_probabilities`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.network import to_model_input

CPU = torch.device("cpu")


def predict_probabilities(
    model: nn.Module, images: np.ndarray, batch_size: int = 64, device: torch.device = CPU
) -> np.ndarray:
    """Softmax probabilities (N, 3) for cleaned uint8 views (N, H, W)."""
    model = model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = to_model_input(np.ascontiguousarray(images[start : start + batch_size]))
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(model(batch).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def view_probabilities(
    model: nn.Module,
    views: pd.DataFrame,
    store_root: Path,
    batch_size: int = 64,
    device: torch.device = CPU,
) -> np.ndarray:
    """Probabilities for manifest rows, reading the image store one batch at a time."""
    dataset = ViewDataset(views.reset_index(drop=True), store_root)
    chunks = [
        predict_probabilities(
            model,
            np.stack(
                [dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))]
            ),
            batch_size,
            device,
        )
        for start in range(0, len(dataset), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3), np.float32)


def predict_views(model: nn.Module, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
    """`views` with pred and p_no_stenosis, p_non_significant, p_significant columns."""
    probabilities = view_probabilities(model, views, store_root)
    return views.reset_index(drop=True).assign(
        pred=probabilities.argmax(1),
        p_no_stenosis=probabilities[:, 0],
        p_non_significant=probabilities[:, 1],
        p_significant=probabilities[:, 2],
    )

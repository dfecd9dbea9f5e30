"""Predictions of a trained model on cleaned views (the same input transform as training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.network import to_model_input


def predict_probabilities(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, 3) for cleaned uint8 views (N, H, W)."""
    model = model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = to_model_input(np.ascontiguousarray(images[start : start + batch_size]))
            batch = batch.contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(model(batch).float(), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def predict_views(model: nn.Module, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
    """`views` with pred and p_no_stenosis, p_non_significant, p_significant columns."""
    dataset = ViewDataset(views.reset_index(drop=True), store_root)
    images = (
        np.stack([dataset.image(i) for i in range(len(dataset))])
        if len(dataset)
        else np.zeros((0, 1, 1), np.uint8)
    )
    probabilities = predict_probabilities(model, images)
    return views.reset_index(drop=True).assign(
        pred=probabilities.argmax(1) if len(probabilities) else [],
        p_no_stenosis=probabilities[:, 0],
        p_non_significant=probabilities[:, 1],
        p_significant=probabilities[:, 2],
    )

"""Integrated Gradients (Captum) on one cleaned view, and how the attribution is spread."""

from __future__ import annotations

import cv2
import numpy as np
from captum.attr import IntegratedGradients
from torch import nn

from cass_pipeline.domain.model.network import to_model_input


def integrated_gradients(
    model: nn.Module, image: np.ndarray, target: int, steps: int = 32
) -> np.ndarray:
    """Attribution per pixel (H, W), summed over the three replicated channels, for class
    `target`, from a black baseline."""
    model = model.eval()
    inputs = to_model_input(image[None]).requires_grad_(True)
    baseline = to_model_input(np.zeros_like(image)[None])
    attributions = IntegratedGradients(model).attribute(
        inputs, baselines=baseline, target=int(target), n_steps=steps
    )
    return attributions.detach().sum(dim=1)[0].numpy()


def central_band(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Mask of the central vertical band covering `fraction` of the width (where a CPR view
    puts the vessel)."""
    mask = np.zeros(shape, bool)
    half = max(1, round(shape[1] * fraction / 2))
    mask[:, shape[1] // 2 - half : shape[1] // 2 + half] = True
    return mask


def mass_fraction(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the absolute attribution inside `mask`."""
    magnitude = np.abs(attribution)
    total = magnitude.sum()
    return float(magnitude[mask].sum() / total) if total > 0 else 0.0


def overlay(image: np.ndarray, attribution: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """BGR picture: the view with the absolute attribution as a heat map on top."""
    magnitude = np.abs(attribution)
    scale = np.percentile(magnitude, 99.5) or 1.0
    heat = cv2.applyColorMap(np.uint8(np.clip(magnitude / scale, 0, 1) * 255), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(grey, 1 - alpha, heat, alpha, 0)

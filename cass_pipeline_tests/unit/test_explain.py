"""Integrated Gradients put the attribution where the model looks."""

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.model.explain import (
    central_band,
    explain_views,
    integrated_gradients,
    mass_fraction,
    overlay,
)


class BandModel(nn.Module):
    """Class 2's logit is the mean of the central band of the first channel; others are 0."""

    def forward(self, x):
        band = x[:, 0, :, 12:20].mean(dim=(1, 2))
        zeros = torch.zeros_like(band)
        return torch.stack([zeros, zeros, band], dim=1)


def test_attribution_concentrates_on_the_vessel_band():
    rng = np.random.default_rng(0)
    image = rng.integers(20, 60, (32, 32)).astype(np.uint8)
    image[:, 12:20] = 200
    attribution = integrated_gradients(BandModel(), image, target=2, steps=16)
    assert attribution.shape == (32, 32)
    band = central_band((32, 32), 8 / 32)
    assert band[:, 12:20].all() and band.sum() == 32 * 8
    assert mass_fraction(attribution, band) > 0.99
    assert mass_fraction(attribution, ~band) < 0.01
    picture = overlay(image, attribution)
    assert picture.shape == (32, 32, 3) and picture.dtype == np.uint8


class Views:
    """Two 128-px views as the model takes them; the second carries a line of burned-in text."""

    def __init__(self):
        rng = np.random.default_rng(1)
        self.images = []
        for text in ("", "STUDY ANGIOGRAM WORKSTATION"):
            image = rng.integers(20, 60, (128, 128)).astype(np.uint8)
            image[:, 48:80] = 200
            cv2.putText(image, text, (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
            self.images.append(image)

    def model_image(self, index: int) -> np.ndarray:
        return self.images[index]


def test_an_explanation_showing_text_is_withheld():
    picks = pd.DataFrame(
        {
            "index": [0, 1],
            "grade_pred": [np.nan, np.nan],
            "pred": [2, 2],
            "label": [2, 2],
            "patient_id": ["P1", "P2"],
            "branch": ["LAD", "RCA"],
            "view_index": [0, 0],
        }
    )
    kept, read = explain_views(BandModel(), Views(), picks, steps=4, band=0.25)
    assert read.error is None and read.views_read == 2
    assert read.text_views == ["significant_P2_RCA_0"]
    assert [e.name for e in kept] == ["significant_P1_LAD_0"]

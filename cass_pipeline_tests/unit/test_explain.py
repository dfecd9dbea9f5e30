"""Integrated Gradients put the attribution where the model looks."""

import numpy as np
import torch
from torch import nn

from cass_pipeline.domain.model.explain import (
    central_band,
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

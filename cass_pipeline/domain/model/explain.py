"""Integrated Gradients (Captum) on one cleaned view, and how the attribution is spread."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from captum.attr import IntegratedGradients
from torch import nn

from cass_pipeline.domain.anatomy import GRADES, STENOSIS_CLASSES
from cass_pipeline.domain.imaging.cleanup import NO_HINTS, OverlayHints, clean_image
from cass_pipeline.domain.imaging.pixel_text import PixelText, check_pixels
from cass_pipeline.domain.model.config import ExplainSettings
from cass_pipeline.domain.model.network import to_model_input


def integrated_gradients(
    model: nn.Module, image: np.ndarray, target: int, steps: int = ExplainSettings.steps
) -> np.ndarray:
    """Attribution per pixel (H, W), summed over the three channels (the replicated view, or
    it and its neighbours), of a view as the network takes it (H, W or 3, H, W), for output
    `target` (a class or a grade), from a black baseline."""
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


@dataclass(frozen=True)
class Explanation:
    """One view's heat map (PNG), its caption and its attribution share on the vessel band."""

    name: str
    png: bytes
    caption: str
    vessel_fraction: float


def explanation_sample(views: pd.DataFrame, predictions: pd.DataFrame, per_class: int):
    """`per_class` predicted views of each true class (fixed draw), with their row in `views`
    as `index`."""
    keyed = views.reset_index().merge(
        predictions, on=["patient_id", "branch", "view_index"], suffixes=("", "_p")
    )
    return keyed.sample(frac=1, random_state=0).groupby("label").head(per_class)


def explained(
    model: nn.Module,
    image: np.ndarray,
    target: int,
    steps: int,
    band: float = ExplainSettings.vessel_band,
) -> tuple[np.ndarray, float]:
    """Integrated Gradients of `target` on a cleaned view as the network takes it: the
    heat-map overlay (BGR) on the view itself and the share of the attribution on the central
    vessel band."""
    attribution = integrated_gradients(model, image, target, steps)
    view = image if image.ndim == 2 else image[1]
    return overlay(view, attribution), mass_fraction(attribution, central_band(view.shape, band))


#: The side in pixels an explanation picture is written at, at least.
EXPLANATION_SIDE = 256


def explain_views(
    model: nn.Module, dataset, picks: pd.DataFrame, steps: int, band: float
) -> tuple[list[Explanation], PixelText]:
    """Integrated Gradients of each picked view's predicted output (its grade from a grade
    model, else its class), as heat-map overlays; those where OCR reads text (no identifier
    is known here: any confident word) are left out, and what OCR read is returned."""
    explanations, pictures = [], {}
    for row in picks.itertuples():
        graded = not pd.isna(row.grade_pred)
        output = int(row.grade_pred if graded else row.pred)
        picture, fraction = explained(model, dataset.model_image(row.index), output, steps, band)
        truth, predicted = STENOSIS_CLASSES[row.label], STENOSIS_CLASSES[row.pred]
        if graded:
            predicted += f" ({GRADES[output]})"
        name = f"{truth}_{row.patient_id}_{row.branch}_{row.view_index}"
        pictures[name] = picture
        if picture.shape[0] < EXPLANATION_SIDE:  # a readable size, wherever it is shown
            scale = EXPLANATION_SIDE / picture.shape[0]
            picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        explanations.append(
            Explanation(
                name,
                cv2.imencode(".png", picture)[1].tobytes(),
                f"truth {truth}, predicted {predicted}, {fraction:.0%} on the vessel band",
                fraction,
            )
        )
    read = check_pixels(pictures, ())
    if read.error is not None:
        return [], read
    return [e for e in explanations if e.name not in read.text_views], read


@dataclass(frozen=True)
class ImageExplanation:
    """One image classified and explained: the probabilities of the model's outputs (grades
    or classes) by name, the predicted one, the heat-map overlay and the attribution share
    on the central vessel band."""

    probabilities: dict[str, float]
    predicted: str
    picture: np.ndarray
    vessel_fraction: float

    def lines(self) -> list[str]:
        return [
            " ".join(f"{name}={p:.3f}" for name, p in self.probabilities.items()),
            f"predicted {self.predicted}; {self.vessel_fraction:.0%} of the "
            "attribution on the central vessel band",
        ]


def explain_image(
    predictor, frame: np.ndarray, steps: int, hints: OverlayHints = NO_HINTS
) -> ImageExplanation:
    """Clean `frame` as the model's bundle says, classify (or grade) it, and explain it (a
    model on neighbouring views sees the one view in their place, as at a branch's ends)."""
    cleaned, _ = clean_image(frame, predictor.bundle.ingest.cleanup, hints)
    image = predictor.model_views({"view": cleaned[None]})
    probabilities = predictor.probabilities(image)[0]
    predicted = int(probabilities.argmax())
    picture, share = explained(predictor.network(), image[0], predicted, steps)
    names = predictor.bundle.outputs.names
    named = dict(zip(names, map(float, probabilities), strict=True))
    return ImageExplanation(named, names[predicted], picture, share)

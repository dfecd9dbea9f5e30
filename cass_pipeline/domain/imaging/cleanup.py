"""The one image cleanup used by training, evaluation and serving alike.

Steps: burned-in text and markers (pixels at or above `text_level`) are dilated and
inpainted; empty borders (rows / columns darker than `border_level` at the edges) are cut;
the image is resized to `size` x `size`; the result is 8-bit. The parameters are recorded
with every output (`CleanupConfig.fingerprint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cass_pipeline.domain.storage import settings_hash

DEFAULT_WINDOW_HU = (-200.0, 700.0)


@dataclass(frozen=True)
class CleanupConfig:
    """Cleanup parameters; 512 px as in the paper (the demo uses less)."""

    size: int = 512
    text_level: int = 254
    dilate_px: int = 2
    inpaint_radius: int = 5
    border_level: int = 8

    def fingerprint(self) -> str:
        return settings_hash(asdict(self))


@dataclass(frozen=True)
class CleanupStats:
    """What the cleanup changed: text pixels found, pixels inpainted, the crop kept."""

    text_pixels: int
    masked_pixels: int
    crop: tuple[int, int, int, int]


def ct_window_to_uint8(
    hu: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW_HU, top: int = 255
) -> np.ndarray:
    """HU in the window (low, high) mapped to 0..top."""
    low, high = window
    return np.round(np.clip((hu - low) / (high - low), 0, 1) * top).astype(np.uint8)


def content_box(image: np.ndarray, level: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) after cutting edge rows/columns darker than `level`."""
    rows = np.flatnonzero(image.max(axis=1) >= level)
    cols = np.flatnonzero(image.max(axis=0) >= level)
    if len(rows) == 0 or len(cols) == 0:
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def clean_image(
    image: np.ndarray, config: CleanupConfig = CleanupConfig()
) -> tuple[np.ndarray, CleanupStats]:
    """Text removed, borders cut, resized: the model-ready 8-bit image and its statistics."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a 2D uint8 image, got {image.dtype} {image.shape}")
    text = image >= config.text_level
    text_pixels = int(text.sum())
    mask = text.astype(np.uint8)
    if text_pixels:
        if config.dilate_px:
            kernel = np.ones((2 * config.dilate_px + 1,) * 2, np.uint8)
            mask = cv2.dilate(mask, kernel)
        image = cv2.inpaint(image, mask, config.inpaint_radius, cv2.INPAINT_NS)
    top, bottom, left, right = content_box(image, config.border_level)
    cropped = image[top:bottom, left:right]
    shrinking = cropped.shape[0] * cropped.shape[1] > config.size**2
    resized = cv2.resize(
        cropped,
        (config.size, config.size),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    return resized, CleanupStats(text_pixels, int(mask.sum()), (top, bottom, left, right))

"""The one image cleanup used by training, evaluation and serving alike.

Steps: the overlay is found by what it is: in a colour image every pixel with chroma (a CT
image is grey; `colour_overlay`, found by the reader before the conversion to grey), and the
bright components (pixels at or above `text_level`) that are drawn in thin strokes, as glyphs,
scale bars and markers are (`text_shaped`); a bright blob or tube at the same level (calcium,
a stent, contrast windowed to white) is anatomy and stays. The overlay is dilated and
inpainted at half resolution, each text component in its own neighbourhood, and no filled
pixel is left brighter than the unmasked pixels around it (so a line of text crossing a
bright vessel does not smear the vessel along the line); empty borders (rows / columns darker
than `border_level` at the edges) are cut; the image is resized to `size` x `size`; the result
is 8-bit. The parameters and the algorithm's version are recorded with every output
(`CleanupConfig.fingerprint`, in `config.py` with `CLEANUP_VERSION`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cass_pipeline.domain.imaging.config import CleanupConfig

DEFAULT_WINDOW_HU = (-200.0, 700.0)
#: A colour pixel whose channels differ by more than this is overlay, not CT grey.
CHROMA_LEVEL = 24
#: Image side at which `stroke_px` holds; strokes of larger images scale with them.
STROKE_SIDE = 512
#: A bright component this thin (half-width, px at 512) is a line of overlay wherever it is.
THIN_STROKE = 1.5
#: Share of the side along each edge where workstations write their text.
EDGE_BAND = 0.15
#: Area over squared half-width from which a component is a stroke, not a blob (a disc: pi).
ELONGATION = 8.0
#: The text is inpainted at this fraction of the resolution (`inpaint_coarse`).
INPAINT_SCALE = 2
#: In a lossily compressed image (JPEG, JPEG 2000, near-lossless JPEG-LS) the glyphs' pixels
#: fall up to this far below `text_level`: the bright components are taken from that level
#: down (their ringing halo is within the mask's `dilate_px`; growing it by one more pixel
#: inpainted more anatomy and left no less text).
LOSSY_MARGIN = 48
#: A series' overlay (`persistent_overlay`): pixels within this many levels of the middle
#: view's in this share of at least this many views, this much brighter than their
#: surroundings (`brighter_than_around`).
STEADY_TOLERANCE = 2
STEADY_SHARE = 0.8
STEADY_VIEWS = 4
STEADY_CONTRAST = 24
STEADY_UNIFORM = 0.5
STEADY_SAMPLE = 16
#: A column steady (and varying along it) in this share of its rows lies on the rotation axis.
AXIS_SHARE = 0.3


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


def local_bound(image: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:
    """For each masked pixel, the brightest unmasked pixel within `radius` (the radius
    doubled until one is found): what its surroundings can explain."""
    masked = mask.astype(bool)
    visible = np.where(masked, 0, image).astype(np.uint8)
    unmasked = (~masked).astype(np.uint8)
    bound = np.full(image.shape, 255, np.uint8)
    need = masked.copy()
    while need.any() and radius <= max(image.shape):
        kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
        take = need & (cv2.dilate(unmasked, kernel) > 0)
        bound[take] = cv2.dilate(visible, kernel)[take]
        need &= ~take
        radius *= 2
    return bound


def text_windows(mask: np.ndarray, pad: int) -> list[tuple[slice, slice]]:
    """Boxes around the text components, padded and merged where they overlap."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = mask.shape
    boxes = [
        [max(0, y - pad), min(height, y + h + pad), max(0, x - pad), min(width, x + w + pad)]
        for x, y, w, h in map(cv2.boundingRect, contours)
    ]
    merged: list[list[int]] = []
    for box in sorted(boxes):
        for other in merged:
            if box[0] < other[1] and other[0] < box[1] and box[2] < other[3] and other[2] < box[3]:
                other[:] = [min(box[0], other[0]), max(box[1], other[1]),
                            min(box[2], other[2]), max(box[3], other[3])]  # fmt: skip
                break
        else:
            merged.append(box)
    return [(slice(a, b), slice(c, d)) for a, b, c, d in merged]


def inpaint_coarse(window: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:
    """The window inpainted at 1/INPAINT_SCALE resolution (a block is masked when any of its
    pixels is), then brought back to full size: the fill is smooth, so this loses little and
    costs a quarter."""
    height, width = mask.shape
    rows, cols = -(-height // INPAINT_SCALE), -(-width // INPAINT_SCALE)
    padding = ((0, rows * INPAINT_SCALE - height), (0, cols * INPAINT_SCALE - width))
    blocks = np.pad(mask, padding, mode="edge").reshape(rows, INPAINT_SCALE, cols, INPAINT_SCALE)
    small = cv2.resize(
        np.pad(window, padding, mode="edge"), (cols, rows), interpolation=cv2.INTER_AREA
    )
    filled = cv2.inpaint(small, blocks.max(axis=(1, 3)), radius, cv2.INPAINT_NS)
    full = (cols * INPAINT_SCALE, rows * INPAINT_SCALE)
    return cv2.resize(filled, full, interpolation=cv2.INTER_LINEAR)[:height, :width]


def remove_text(image: np.ndarray, mask: np.ndarray, config: CleanupConfig) -> np.ndarray:
    """Inpaint the text within its own neighbourhood (each window of `text_windows` once),
    then bound the fill by the local brightness (`local_bound`)."""
    out = image.copy()
    pad = INPAINT_SCALE * (config.inpaint_radius + 1) + config.dilate_px + 2
    for rows, cols in text_windows(mask, pad):
        window, window_mask = image[rows, cols], mask[rows, cols]
        filled = inpaint_coarse(window, window_mask, config.inpaint_radius)
        bound = local_bound(window, window_mask, config.dilate_px + 2)
        masked = window_mask.astype(bool)
        out[rows, cols][masked] = np.minimum(filled, bound)[masked]
    return out


def colour_overlay(frame: np.ndarray) -> np.ndarray | None:
    """The pixels of a colour frame that have chroma (overlay: text, markers, graphics), or
    None for a frame without colour."""
    if frame.ndim != 3 or frame.shape[2] < 3:
        return None
    rgb = frame[..., :3].astype(np.int16)
    chroma = rgb.max(axis=2) - rgb.min(axis=2) > CHROMA_LEVEL
    return chroma if chroma.any() else None


@dataclass(frozen=True)
class OverlayHints:
    """What the reader knows of a frame's overlay: the pixels its colour marks
    (`colour_overlay`), whether the file was compressed lossily, and what the views of its
    series show in the same place (`persistent_overlay`)."""

    colour: np.ndarray | None = None
    lossy: bool = False
    #: The value of its series' steady overlay where there is one, else 0.
    persistent: np.ndarray | None = None


#: A grey frame without compression loss (or nothing known of it).
NO_HINTS = OverlayHints()


def persistent_overlay(frames: Sequence[np.ndarray]) -> np.ndarray | None:
    """What the views of a series show in the same place: the annotations a workstation draws
    over a rotating anatomy. Pixels within `STEADY_TOLERANCE` of the middle view's in at
    least `STEADY_SHARE` of the views (up to `STEADY_SAMPLE` of them, evenly spaced),
    `STEADY_CONTRAST` brighter than around them, in components drawn in one value (at least
    `STEADY_UNIFORM` of their pixels near their brightest), apart from the rotation axis
    (the centreline, which every rotation shows too, varies along the vessel; a stent or
    calcium around the lumen is steady and joined to it): their value there, 0 elsewhere;
    None for fewer than `STEADY_VIEWS` views of one size, or when nothing is steady."""
    if len(frames) < STEADY_VIEWS or len({f.shape for f in frames}) > 1 or frames[0].ndim != 2:
        return None
    sample = frames[:: max(1, len(frames) // STEADY_SAMPLE)]
    reference = sample[len(sample) // 2]
    close = np.zeros(reference.shape, np.uint8)
    for frame in sample:
        close += cv2.absdiff(frame, reference) <= STEADY_TOLERANCE
    steady = close >= STEADY_SHARE * len(sample)
    # The rotation axis: columns steady in most rows and varying along them (the centreline
    # and its neighbours, which every rotation shows alike; text is flat along its strokes).
    # What is steady and joined to it (a stent, calcium around the lumen) is anatomy.
    varying = np.abs(np.diff(reference.astype(np.int16), axis=0, prepend=0)) >= 1
    on_axis = (steady & varying).mean(axis=0) >= AXIS_SHARE
    count, labels = cv2.connectedComponents(steady.astype(np.uint8), connectivity=8)
    anatomy = np.zeros(count, bool)
    anatomy[np.unique(labels[:, on_axis])] = True
    anatomy[0] = False
    bright = steady & ~anatomy[labels] & brighter_than_around(reference)
    if not bright.any():
        return None
    count, labels = cv2.connectedComponents(bright.astype(np.uint8), connectivity=8)
    values = reference[bright].astype(np.int16)
    owners = labels[bright]
    size = np.bincount(owners, minlength=count)
    high = np.zeros(count, np.int16)
    np.maximum.at(high, owners, values)
    at_top = np.bincount(
        owners, weights=values >= high[owners] - 2 * STEADY_TOLERANCE, minlength=count
    )
    drawn = (at_top >= STEADY_UNIFORM * size) & (size >= 3)
    drawn[0] = False
    mask = drawn[labels]
    return np.where(mask, reference, 0).astype(np.uint8) if mask.any() else None


def text_shaped(image: np.ndarray, config: CleanupConfig, level: int | None = None) -> np.ndarray:
    """The components at or above `text_level` drawn in strokes, as glyphs, scale bars and
    markers are: the widest point of each (by the distance transform, scaled to the image's
    side) at most `stroke_px` from its edge, and either very thin, in the band along the
    image's edges where workstations write, or elongated; not calcium or contrast, which are
    thicker, or compact blobs inside the image. Of a thick component, the strokes that do not
    hold a disc of that radius are text too (a line of text that touches a saturated vessel).
    Worked out per run of rows that hold bright pixels (no component crosses an empty row), so
    text along the edges costs little. `level` replaces `text_level` (a lossy image's)."""
    return stroke_components(image >= (config.text_level if level is None else level), config)


def stroke_components(on: np.ndarray, config: CleanupConfig) -> np.ndarray:
    """The components of `on` that `text_shaped` takes for text."""
    shaped = np.zeros_like(on)
    rows = np.flatnonzero(on.any(axis=1))
    if len(rows) == 0:
        return shaped
    height, width = on.shape
    scale = max(1.0, min(on.shape) / STROKE_SIDE)
    band_x, band_y = EDGE_BAND * width, EDGE_BAND * height
    breaks = np.flatnonzero(np.diff(rows) > 1)
    for first, last in zip(
        rows[np.r_[0, breaks + 1]], rows[np.r_[breaks, len(rows) - 1]], strict=True
    ):
        top, bottom = max(first - 1, 0), min(last + 2, height)  # with the empty rows around
        run = on[top:bottom]
        run_u8 = run.astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
            run_u8, 8, cv2.CV_32S, cv2.CCL_GRANA
        )
        depth = cv2.distanceTransform(run_u8, cv2.DIST_L2, 3)
        labels_on = labels[run]
        widest = np.zeros(count, np.float32)
        np.maximum.at(widest, labels_on, depth[run])
        x, y, w, h, area = (stats[:, i] for i in range(5))
        y = y + top
        at_edge = (
            (y + h <= band_y) | (y >= height - band_y) | (x + w <= band_x) | (x >= width - band_x)
        )
        elongated = area >= ELONGATION * np.maximum(widest, 1.0) ** 2
        strokes = widest <= config.stroke_px * scale
        text = (widest <= THIN_STROKE * scale) | (strokes & (at_edge | elongated))
        text[0] = False
        band = shaped[top:bottom]
        band[run] = text[labels_on]
        thick = run & ~band
        if thick.any():  # text touching saturated anatomy: its strokes do not hold a disc
            radius = int(np.ceil(config.stroke_px * scale))
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            body = cv2.morphologyEx(thick.astype(np.uint8), cv2.MORPH_OPEN, disc).astype(bool)
            band |= thick & ~cv2.dilate(body.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(
                bool
            )
    return shaped


def overlay_mask(
    image: np.ndarray, config: CleanupConfig, hints: OverlayHints = NO_HINTS
) -> np.ndarray:
    """What the cleanup removes, before dilation: text-shaped bright components (from a lower
    level in a lossy image), the pixels the colour marks as overlay, and what the view shows
    of its series' steady overlay (`series_overlay`)."""
    level = config.text_level - LOSSY_MARGIN if hints.lossy else None
    text = text_shaped(image, config, level)
    if hints.colour is not None:
        text = text | hints.colour
    if hints.persistent is not None:
        text = text | series_overlay(image, hints.persistent, config)
    return text


def series_overlay(image: np.ndarray, steady: np.ndarray, config: CleanupConfig) -> np.ndarray:
    """Where this view shows its series' steady overlay (`persistent_overlay`), and the glyphs
    drawn in the overlay's own value that change from view to view (an angle): text-shaped
    components at that value, brighter than around them."""
    overlay = steady > 0
    shown = overlay & (cv2.absdiff(image, steady) <= STEADY_TOLERANCE)
    counts = np.bincount(steady[overlay], minlength=256)
    values = np.flatnonzero((counts >= STEADY_UNIFORM * counts.max()) & (counts > 0))
    values = values[values < config.text_level]
    if not len(values):  # drawn at the text level: `text_shaped` finds the changing glyphs
        return shown
    drawn = np.zeros_like(shown)
    for value in values:
        drawn |= cv2.absdiff(image, np.full_like(image, value)) <= STEADY_TOLERANCE
    drawn &= brighter_than_around(image)
    return shown | stroke_components(drawn, config)


def brighter_than_around(image: np.ndarray) -> np.ndarray:
    """The pixels `STEADY_CONTRAST` brighter than the mean of their neighbourhood (1/16 of
    the side): drawn annotations stand out, flat regions do not."""
    side = max(5, (min(image.shape) // 16) | 1)
    around = cv2.blur(image, (side, side)).astype(np.int16)
    return image.astype(np.int16) - around >= STEADY_CONTRAST


def clean_image(
    image: np.ndarray, config: CleanupConfig = CleanupConfig(), hints: OverlayHints = NO_HINTS
) -> tuple[np.ndarray, CleanupStats]:
    """Overlay removed, borders cut, resized: the model-ready 8-bit image and its statistics;
    `hints` say what the reader knows of the overlay (colour, lossy compression, the series'
    steady overlay)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a 2D uint8 image, got {image.dtype} {image.shape}")
    return clean_masked(image, overlay_mask(image, config, hints), config)


def clean_masked(
    image: np.ndarray, text: np.ndarray, config: CleanupConfig
) -> tuple[np.ndarray, CleanupStats]:
    """`clean_image` once the overlay `text` is found: dilate and inpaint it, cut the
    borders, resize."""
    text_pixels = int(text.sum())
    mask = text.astype(np.uint8)
    if text_pixels:
        if config.dilate_px:
            kernel = np.ones((2 * config.dilate_px + 1,) * 2, np.uint8)
            mask = cv2.dilate(mask, kernel)
        image = remove_text(image, mask, config)
    top, bottom, left, right = content_box(image, config.border_level)
    cropped = image[top:bottom, left:right]
    shrinking = cropped.shape[0] * cropped.shape[1] > config.size**2
    resized = cv2.resize(
        cropped,
        (config.size, config.size),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    return resized, CleanupStats(text_pixels, int(mask.sum()), (top, bottom, left, right))


def example_panel(
    raw: np.ndarray, config: CleanupConfig, hints: OverlayHints = NO_HINTS
) -> np.ndarray:
    """Source with each line of the detected overlay under a solid red box (no glyph left to
    read), and the cleaned view."""
    cleaned, _ = clean_image(raw, config, hints)
    masked = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    masked[text_boxes(overlay_mask(raw, config, hints))] = (0, 0, 255)
    masked = cv2.resize(masked, (cleaned.shape[1], cleaned.shape[0]), interpolation=cv2.INTER_AREA)
    return np.concatenate(
        [
            masked,
            np.full((cleaned.shape[0], 4, 3), 255, np.uint8),
            cv2.cvtColor(cleaned, cv2.COLOR_GRAY2BGR),
        ],
        axis=1,
    )


def text_boxes(mask: np.ndarray) -> np.ndarray:
    """The padded bounding boxes of `mask`'s lines of text (its pixels joined sideways), so
    that filling them leaves no glyph shape."""
    pad = max(2, mask.shape[0] // 64)
    joined = cv2.dilate(mask.astype(np.uint8), np.ones((1, 4 * pad + 1), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = np.zeros(mask.shape, bool)
    for x, y, w, h, _ in stats[1:count]:
        boxes[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad] = True
    return boxes

"""Text left in the pixels of an image CASS writes, read back by OCR: a patient's identifier
readable there fails the run, any other confident text is a warning.

The engine is Tesseract (the `tesserocr` wheel, with Debian's `tesseract-ocr-eng` model:
nothing is downloaded). A view is read where its light ink (burned-in text is drawn light)
lines up as text does; those views are read as one sheet, each upscaled to `OCR_SIDE`, that
ink black on white, tiled with a white gap; each word read is given to the view under its
centre.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cass_pipeline.domain.privacy import identifiers_found, tokens

#: Changes whenever the check reads other words from the same pixels.
PIXEL_TEXT_VERSION = 3
#: Each view is upscaled to about this side before it is read (glyphs of a 128-px view
#: grow to a size Tesseract reads): of 60 identifiers planted in demo views, 256 found 37,
#: 384 found 59 (docs/imaging.md).
OCR_SIDE = 384
#: A pixel this much brighter than the mean of its `BLOCK` x `BLOCK` neighbourhood is ink.
INK_CONTRAST = 15
BLOCK = 41
#: Ink that holds a disc of `THICK_PX` pixels of the view in radius, or of `THICK` of its
#: side in a large view, is not a stroke (burned-in strokes are 1-2 px in small views, wider
#: where a view was upscaled).
THICK_PX = 2
THICK = 1 / 64
#: Text is read where glyph-high ink (from `GLYPH_PX` px of the view to `GLYPH_MAX_PX` px or
#: `GLYPH_SHARE` of its side) lines up: `LINE_GLYPHS` components side by side, or one
#: `RUN_TOGETHER` times as wide as it is high that fills at most `RUN_FILL` of its box
#: (glyphs run together; a streak of a crossing vessel is solid).
GLYPH_PX = 4
GLYPH_MAX_PX = 16
GLYPH_SHARE = 0.12
LINE_GLYPHS = 3
RUN_TOGETHER = 2.5
RUN_FILL = 0.55
SHEET_COLUMNS = 4
GAP = 16
#: A word read with at least this confidence (0-100) is confident text.
CONFIDENT = 85
#: Confident text has at least this many letters or digits (anatomy reads as short marks).
MIN_CHARACTERS = 4
#: An identifier token needs this many characters to be looked for (two-letter name parts
#: are read out of anatomy by chance); from `INSIDE` characters it is also found inside a
#: longer word read ("DOEJOHN"), from `NEAR` with one character misread ("46417233") or
#: `NEAR` of its characters read alone, cut short ("404172": Tesseract on AVX2-only CPUs).
#: Identifiers count at any confidence: OCR is often unsure of what is plainly legible.
MIN_IDENTIFIER = 3
INSIDE = 4
NEAR = 6
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
)
INSTALL_HINT = (
    "install the OCR engine: `apt-get install tesseract-ocr-eng` and `pip install tesserocr` "
    "(`make env` does both)"
)


class OcrUnavailableError(RuntimeError):
    """The OCR engine or its English model is not installed; the message says how to."""


@dataclass(frozen=True)
class Word:
    """A word read on view `view` with its confidence (0-100)."""

    view: int
    text: str
    confidence: float


@dataclass
class PixelText:
    """What the check read on a set of views: how many, how long, the views (by the keys it
    was given) where an identifier or other confident text was readable, and why it could not
    read at all (`error`)."""

    views_read: int = 0
    seconds: float = 0.0
    identifier_views: list[str] = field(default_factory=list)
    text_views: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """Why pixels with these views may not be written, or None."""
        if self.error is not None:
            return f"the pixels could not be checked: {self.error}"
        if self.identifier_views:
            return (
                "OCR reads a patient identifier in the cleaned pixels of "
                + ", ".join(self.identifier_views[:5])
                + ": the cleanup missed an overlay"
            )
        return None

    def merge(self, other: PixelText) -> PixelText:
        return PixelText(
            self.views_read + other.views_read,
            self.seconds + other.seconds,
            self.identifier_views + other.identifier_views,
            self.text_views + other.text_views,
            self.error or other.error,
        )

    def to_json(self, timed: bool = True) -> dict:
        """The findings, with the seconds the reading took unless not `timed` (a document
        that must repeat for the same input)."""
        return {
            "views_read": self.views_read,
            **({"seconds": round(self.seconds, 3)} if timed else {}),
            "identifier_views": self.identifier_views,
            "text_views": self.text_views,
            "error": self.error,
        }


def tessdata_dir() -> str:
    """Where Tesseract's English model is: TESSDATA_PREFIX, else Debian's folders."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for folder in candidates:
        if folder and (Path(folder) / "eng.traineddata").is_file():
            return folder
    raise OcrUnavailableError(f"no Tesseract English model (eng.traineddata) found; {INSTALL_HINT}")


class OcrEngine:
    """One Tesseract instance per process, loaded on first use, read by one thread at a time."""

    _lock = threading.Lock()
    _api = None

    @classmethod
    def words(cls, sheet: np.ndarray) -> list[tuple[str, float, tuple[int, int, int, int]]]:
        """(text, confidence, box (left, top, right, bottom)) of every word Tesseract reads on
        `sheet`."""
        from PIL import Image

        with cls._lock:
            api = cls._api or cls._open()
            api.SetImage(Image.fromarray(sheet))
            api.Recognize()
            found = []
            iterator = api.GetIterator()
            level = cls._word_level
            while iterator is not None and not iterator.Empty(level):
                text = iterator.GetUTF8Text(level).strip()
                if text:
                    found.append((text, iterator.Confidence(level), iterator.BoundingBox(level)))
                if not iterator.Next(level):
                    break
            api.Clear()
            return found

    @classmethod
    def _open(cls):
        try:
            import tesserocr
        except ImportError as error:
            raise OcrUnavailableError(f"tesserocr is not installed; {INSTALL_HINT}") from error
        cls._api = tesserocr.PyTessBaseAPI(
            path=tessdata_dir(), lang="eng", psm=tesserocr.PSM.SPARSE_TEXT
        )
        cls._api.SetVariable("tessedit_do_invert", "0")  # the ink is black already
        cls._word_level = tesserocr.RIL.WORD
        return cls._api


def engine_version() -> str:
    """Tesseract's version, or 'not installed'."""
    try:
        import tesserocr
    except ImportError:
        return "not installed"
    return tesserocr.tesseract_version().split()[1]


def ink(view: np.ndarray, scale: int) -> np.ndarray:
    """Black on white: the pixels of the upscaled view brighter than their neighbourhood,
    where the view at its own size has ink that lines up as text (`in_lines`) once the
    regions too thick for a stroke (a vessel, which Tesseract would take for a picture and
    read nothing near) are taken out; white where it has none."""
    grey = view if view.ndim == 2 else cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
    block = max(3, (BLOCK // scale) | 1)
    light = cv2.adaptiveThreshold(
        grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -INK_CONTRAST
    )
    radius = round(max(THICK_PX, THICK * min(grey.shape)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    thick = cv2.dilate(cv2.morphologyEx(light, cv2.MORPH_OPEN, disc), np.ones((3, 3), np.uint8))
    text = in_lines(light & ~thick)
    size = (grey.shape[1] * scale, grey.shape[0] * scale)
    if not text.any():
        return np.full(size[::-1], 255, np.uint8)
    big = cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC)
    light = cv2.adaptiveThreshold(
        big, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, BLOCK, -INK_CONTRAST
    )
    near_text = cv2.dilate(text, np.ones((3, 3), np.uint8))
    return 255 - (light & cv2.resize(near_text, size, interpolation=cv2.INTER_NEAREST))


def in_lines(strokes: np.ndarray) -> np.ndarray:
    """The ink components that line up as text does: glyph-high components, `LINE_GLYPHS` or
    more side by side at one height, or one as wide as a run-together word; the rest of the
    ink (vessel edges, noise) is dropped, so Tesseract has little or nothing to read."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    x, y, w, h, area = (stats[1:, i].astype(np.float32) for i in range(5))
    glyph = (h >= GLYPH_PX) & (h <= max(GLYPH_MAX_PX, min(strokes.shape) * GLYPH_SHARE))
    ids = np.flatnonzero(glyph)
    keep = np.zeros(count, bool)
    if len(ids):
        gx, gy, gw, gh = x[ids], y[ids], w[ids], h[ids]
        height = np.maximum(gh[:, None], gh[None, :])
        centre = gy + gh / 2
        gap = np.maximum(gx[None, :] - (gx + gw)[:, None], gx[:, None] - (gx + gw)[None, :])
        near = (np.abs(centre[:, None] - centre[None, :]) <= height / 2) & (gap <= height)
        near &= np.minimum(gh[:, None], gh[None, :]) >= height / 2  # glyphs of one size
        line = np.arange(len(ids))
        for _ in range(len(ids)):  # label the lines: the smallest index reached
            joined = np.where(near, line[None, :], len(ids)).min(axis=1)
            merged = np.minimum(line, joined)
            if np.array_equal(merged, line):
                break
            line = merged[merged]
        size = np.bincount(line, minlength=len(ids))[line]
        word = (gw >= RUN_TOGETHER * gh) & (area[ids] <= RUN_FILL * gw * gh)
        keep[ids[(size >= LINE_GLYPHS) | word] + 1] = True
    return np.where(keep[labels], strokes, 0).astype(np.uint8)


def read_words(views: Sequence[np.ndarray]) -> list[Word]:
    """Every word OCR reads on the views, the views with ink that lines up as text read
    together as one sheet (none read when no view has any)."""
    if not views:
        return []
    scale = max(1, round(OCR_SIDE / max(views[0].shape[:2])))
    inked = [(k, page) for k, v in enumerate(views) if ((page := ink(v, scale)) < 255).any()]
    if not inked:
        return []
    cell_h = max(page.shape[0] for _, page in inked) + GAP
    cell_w = max(page.shape[1] for _, page in inked) + GAP
    rows = -(-len(inked) // SHEET_COLUMNS)
    columns = min(SHEET_COLUMNS, len(inked))
    sheet = np.full((rows * cell_h + GAP, columns * cell_w + GAP), 255, np.uint8)
    for cell, (_, page) in enumerate(inked):
        row, column = divmod(cell, SHEET_COLUMNS)
        top, left = GAP + row * cell_h, GAP + column * cell_w
        sheet[top : top + page.shape[0], left : left + page.shape[1]] = page
    words = []
    for text, confidence, (x0, y0, x1, y1) in OcrEngine.words(sheet):
        row = min(rows - 1, max(0, ((y0 + y1) // 2 - GAP) // cell_h))
        column = min(columns - 1, max(0, ((x0 + x1) // 2 - GAP) // cell_w))
        cell = row * SHEET_COLUMNS + column
        if cell < len(inked):
            words.append(Word(inked[cell][0], text, float(confidence)))
    return words


def searchable(identifiers: Iterable[str]) -> set[str]:
    """The identifiers worth looking for in pixels: each with a token of `MIN_IDENTIFIER`
    or more characters."""
    return {i for i in identifiers if any(len(t) >= MIN_IDENTIFIER for t in tokens(i))}


def one_edit_apart(a: str, b: str) -> bool:
    """Whether `b` is `a` with at most one character substituted, inserted or deleted."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def misread(token: str, read: Iterable[str]) -> bool:
    """Whether a one-token identifier is among the words read as OCR gets it wrong: inside a
    run-together word, with one character misread, or cut short."""
    for word in read:
        if len(token) >= INSIDE and token in word:
            return True
        if len(token) >= NEAR and (
            one_edit_apart(token, word) or (len(word) >= NEAR and word in token)
        ):
            return True
    return False


def identifier_readable(text: str, identifiers: set[str]) -> bool:
    """Whether a token sequence of an identifier is in `text` (`identifiers_found`), or a
    one-token identifier misread there."""
    if identifiers_found([text], identifiers):
        return True
    read = tokens(text)
    singles = {t[0] for t in map(tokens, identifiers) if len(t) == 1}
    return any(misread(token, read) for token in singles)


def is_confident_text(word: Word) -> bool:
    return word.confidence >= CONFIDENT and sum(c.isalnum() for c in word.text) >= MIN_CHARACTERS


def check_pixels(views: dict[str, np.ndarray], identifiers: Iterable[str]) -> PixelText:
    """OCR of `views` (key -> image): the keys of the views where a token of `identifiers`
    is readable, and of those with other confident text; `error` says why it could not read."""
    start = time.perf_counter()
    keys = list(views)
    try:
        words = read_words([views[k] for k in keys])
    except OcrUnavailableError as error:
        return PixelText(error=str(error))
    wanted = searchable(identifiers)
    identifier_views, text_views = [], []
    for index, key in enumerate(keys):
        heard = [w for w in words if w.view == index]
        if identifier_readable(" ".join(w.text for w in heard), wanted):
            identifier_views.append(key)
        elif any(is_confident_text(w) for w in heard):
            text_views.append(key)
    return PixelText(len(keys), time.perf_counter() - start, identifier_views, text_views)


def first_middle_last(count: int) -> list[int]:
    """The view positions a series is sampled at."""
    return sorted({0, count // 2, count - 1}) if count else []

"""Text left in the pixels of an image CASS writes, read back by OCR: a patient's identifier
readable there fails the run, any other confident text is a warning.

The engine is Tesseract (the `tesserocr` wheel, with Debian's `tesseract-ocr-eng` model:
nothing is downloaded). The views are read as one sheet: each upscaled to `OCR_SIDE`, its
pixels brighter than their neighbourhood (burned-in text is drawn light) made black on white,
tiled with a white gap; each word read is given to the view under its centre.
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
PIXEL_TEXT_VERSION = 2
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
SHEET_COLUMNS = 4
GAP = 16
#: A word read with at least this confidence (0-100) is confident text.
CONFIDENT = 85
#: Confident text has at least this many letters or digits (anatomy reads as short marks).
MIN_CHARACTERS = 4
#: An identifier token needs this many characters to be looked for (two-letter name parts
#: are read out of anatomy by chance); from `INSIDE` characters it is also found inside a
#: longer word read ("DOEJOHN"), from `NEAR` with one character misread ("46417233").
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
        return not self.identifier_views and self.error is None

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
    less the regions too thick for a stroke of text (a vessel, which Tesseract would take for
    a picture and read nothing near)."""
    grey = view if view.ndim == 2 else cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
    big = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    light = cv2.adaptiveThreshold(
        big, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, BLOCK, -INK_CONTRAST
    )
    radius = round(max(THICK_PX, THICK * min(grey.shape)) * scale)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    thick = cv2.dilate(cv2.morphologyEx(light, cv2.MORPH_OPEN, disc), np.ones((3, 3), np.uint8))
    return 255 - (light & ~thick)


def read_words(views: Sequence[np.ndarray]) -> list[Word]:
    """Every word OCR reads on the views, read together as one sheet."""
    if not views:
        return []
    scale = max(1, round(OCR_SIDE / max(views[0].shape[:2])))
    inked = [ink(v, scale) for v in views]
    cell_h = max(v.shape[0] for v in inked) + GAP
    cell_w = max(v.shape[1] for v in inked) + GAP
    rows = -(-len(inked) // SHEET_COLUMNS)
    sheet = np.full((rows * cell_h + GAP, SHEET_COLUMNS * cell_w + GAP), 255, np.uint8)
    for k, view in enumerate(inked):
        row, column = divmod(k, SHEET_COLUMNS)
        top, left = GAP + row * cell_h, GAP + column * cell_w
        sheet[top : top + view.shape[0], left : left + view.shape[1]] = view
    words = []
    for text, confidence, (x0, y0, x1, y1) in OcrEngine.words(sheet):
        row = min(rows - 1, max(0, ((y0 + y1) // 2 - GAP) // cell_h))
        column = min(SHEET_COLUMNS - 1, max(0, ((x0 + x1) // 2 - GAP) // cell_w))
        view = row * SHEET_COLUMNS + column
        if view < len(views):
            words.append(Word(view, text, float(confidence)))
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
    run-together word, or with one character misread."""
    for word in read:
        if len(token) >= INSIDE and token in word:
            return True
        if len(token) >= NEAR and one_edit_apart(token, word):
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

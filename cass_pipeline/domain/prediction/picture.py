"""`report.png`: one page per patient, the summary over a strip of cleaned views per branch,
their votes, the class probabilities, the grade, and the Integrated Gradients of the decisive
views.
The views are shown after the text cleanup, the patient by its pseudonym."""

from __future__ import annotations

import numpy as np

from cass_pipeline.domain.anatomy import GRADES, STENOSIS_CLASSES
from cass_pipeline.domain.model.explain import integrated_gradients, overlay
from cass_pipeline.domain.plots import figure_png, pyplot
from cass_pipeline.domain.prediction.document import PredictionDocument, grade_text, summary_lines
from cass_pipeline.domain.prediction.predictor import PatientPrediction, Predictor, strip_views

#: Inches of each branch's row, of its probability bars, and of the page at least (its text);
#: the share of a row's height its pictures take.
ROW_INCHES, BARS_INCHES, MIN_WIDTH_INCHES, IMAGE_SHARE = 1.25, 2.3, 10.5, 0.78
#: Inches of each picture of explanations.png (256 px at its 80 dpi, 3.2 in).
EXPLAINED_INCHES = 3.2
CLASS_COLOURS = {"no_stenosis": "#2e7d32", "non_significant": "#f9a825", "significant": "#c62828"}


def branch_output(row) -> tuple[str, str, int]:
    """The column of a branch row's decision (grade, else class), its value and its index
    among the network's outputs."""
    if isinstance(row.grade, str):
        return "grade", row.grade, GRADES.index(row.grade)
    return "stenosis_class", row.stenosis_class, STENOSIS_CLASSES.index(row.stenosis_class)


def decisive_views(prediction: PatientPrediction) -> dict[str, tuple[int, int]]:
    """Per branch, the view index that voted for the branch's grade (or class) most
    confidently (the most confident of all its views where none did), and that output."""
    views = prediction.rows("view")
    picks = {}
    for row in prediction.rows("branch").itertuples(index=False):
        column, value, output = branch_output(row)
        own = views[views.branch == row.branch]
        voted = own[own[column] == value]
        own = voted if len(voted) else own
        picks[row.branch] = (int(own.loc[own[f"p_{value}"].idxmax(), "view_index"]), output)
    return picks


def explain_decisive_views(
    predictor: Predictor, prediction: PatientPrediction, steps: int
) -> dict[str, np.ndarray]:
    """Integrated Gradients overlays (BGR) of each branch's decisive view, for its output."""
    network, overlays = predictor.network(), {}
    for branch, (index, output) in decisive_views(prediction).items():
        image = prediction.images[branch][index]
        inputs = predictor.model_views({branch: prediction.images[branch]})[index]
        overlays[branch] = overlay(image, integrated_gradients(network, inputs, output, steps))
    return overlays


def render_report(
    prediction: PatientPrediction,
    document: PredictionDocument,
    overlays: dict[str, np.ndarray] | None = None,
) -> bytes:
    """One page (PNG): the patient summary, then per branch a strip of cleaned views, every
    view's vote, the class probabilities and, with `overlays` (BGR), the Integrated Gradients
    picture of the decisive view."""
    branches = list(document["branches"])
    rows = max(1, len(branches))
    strips = {b: view_strip(prediction.images[b], document["branches"][b]) for b in branches}
    # as wide as the content: the strips at the row's height, the explanations square
    aspect = max((s.shape[1] / s.shape[0] for s in strips.values()), default=8.0)
    shown = ROW_INCHES * IMAGE_SHARE  # the height a row's pictures get under its title
    widths = [BARS_INCHES, shown * aspect, shown * 1.2 if overlays else 0.01]
    fig = pyplot().figure(
        figsize=(max(MIN_WIDTH_INCHES, sum(widths) + 0.5), 1.9 + ROW_INCHES * rows), dpi=80
    )
    grid = fig.add_gridspec(
        rows + 1, 3, height_ratios=[1.6] + [ROW_INCHES] * rows, width_ratios=widths
    )
    decisive = decisive_views(prediction) if overlays else {}
    header = fig.add_subplot(grid[0, :])
    header.axis("off")
    title, *details = summary_lines(document)
    header.text(
        0,
        0.95,
        title,
        fontsize=15,
        weight="bold",
        va="top",
        color=CLASS_COLOURS.get(document["patient_class"], "black"),
    )
    header.text(0, 0.55, "\n".join(details), fontsize=10, va="top")
    for i, branch in enumerate(branches):
        info = document["branches"][branch]
        left = fig.add_subplot(grid[i + 1, 0])
        probability_bars(left, branch, info)
        middle = fig.add_subplot(grid[i + 1, 1])
        middle.imshow(strips[branch])
        middle.axis("off")
        middle.set_anchor("W")
        if overlays and branch in overlays:
            right = fig.add_subplot(grid[i + 1, 2])
            right.imshow(overlays[branch][..., ::-1])
            right.set_anchor("E")
            right.set_title(f"view {decisive[branch][0]}, IG", fontsize=7, loc="left")
            right.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def probability_bars(axis, branch: str, info: dict) -> None:
    values = [info["probabilities"][c] for c in STENOSIS_CLASSES]
    axis.barh(range(3), values, color=[CLASS_COLOURS[c] for c in STENOSIS_CLASSES])
    axis.set(xlim=(0, 1), yticks=range(3), yticklabels=["no", "non-sig", "sig"])
    axis.invert_yaxis()
    axis.tick_params(labelsize=7)
    named = grade_text(info["grade"]) or info["class"].replace("_", " ")
    axis.set_title(
        f"{branch}: {named} ({info['views_used']} views)",
        fontsize=9,
        color=CLASS_COLOURS[info["class"]],
        loc="left",
    )


def rgb(stenosis_class: str) -> np.ndarray:
    colour = CLASS_COLOURS[stenosis_class]
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)


def view_strip(images: np.ndarray, info: dict) -> np.ndarray:
    """RGB: the evenly spaced views of `strip_views` side by side, each over a bar in the
    colour of its vote; under them one cell per view of the branch, in its vote's colour."""
    n, size = len(images), images.shape[1]
    bar = max(3, size // 12)
    classes = [v["class"] for v in info["views"]]
    tiles = []
    for k in strip_views(n):
        view = np.repeat(images[k][..., None], 3, axis=2)
        tiles += [
            np.concatenate([view, np.broadcast_to(rgb(classes[k]), (bar, size, 3))]),
            np.full((size + bar, 3, 3), 255, np.uint8),
        ]
    strip = np.concatenate(tiles[:-1], axis=1)
    width = strip.shape[1]
    cells = np.repeat([rgb(c) for c in classes], -(-width // n), axis=0)[:width]
    votes = np.broadcast_to(cells, (bar, width, 3))
    gap = np.full((3, width, 3), 255, np.uint8)
    return np.concatenate([strip, gap, votes])


def render_explanations(
    prediction: PatientPrediction,
    document: PredictionDocument,
    overlays: dict[str, np.ndarray],
) -> bytes:
    """One PNG: each branch's decisive view under its Integrated Gradients heat map (BGR),
    `EXPLAINED_INCHES` square at 80 dpi, titled with the branch, the view and its decision."""
    decisive = decisive_views(prediction)
    branches = [b for b in document["branches"] if b in overlays]
    columns = min(4, len(branches))
    rows = -(-len(branches) // columns)
    side = EXPLAINED_INCHES
    fig = pyplot().figure(figsize=(side * columns, (side + 0.4) * rows), dpi=80)
    for k, branch in enumerate(branches):
        info = document["branches"][branch]
        axis = fig.add_subplot(rows, columns, k + 1)
        axis.imshow(overlays[branch][..., ::-1], interpolation="bicubic")
        named = grade_text(info["grade"]) or info["class"].replace("_", " ")
        axis.set_title(
            f"{branch}, view {decisive[branch][0]}: {named}",
            fontsize=10,
            color=CLASS_COLOURS[info["class"]],
        )
        axis.axis("off")
    fig.tight_layout()
    return figure_png(fig)

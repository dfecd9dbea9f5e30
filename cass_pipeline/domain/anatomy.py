"""Names and grades shared by every stage: branches, arteries, classes, CAD-RADS.

See shared/reference/domain.md sections 3 and 4 for the sources of these tables.
"""

from __future__ import annotations

from typing import Final

STENOSIS_CLASSES: Final = ("no_stenosis", "non_significant", "significant")
CLASS_INDEX: Final = {name: i for i, name in enumerate(STENOSIS_CLASSES)}
N_CLASSES: Final = len(STENOSIS_CLASSES)

#: Artery of each canonical branch, in reporting order; LM folds into LAD and RI into LCX by
#: convention.
ARTERY_OF_BRANCH: Final = {
    "LM": "LAD",
    "LAD": "LAD",
    "D-1": "LAD",
    "D-2": "LAD",
    "D-3": "LAD",
    "LCX": "LCX",
    "OM": "LCX",
    "OM-1": "LCX",
    "OM-2": "LCX",
    "OM-3": "LCX",
    "PDA-LCX": "LCX",
    "PLV-LCX": "LCX",
    "RI": "LCX",
    "RCA": "RCA",
    "PDA-RCA": "RCA",
    "PLV-RCA": "RCA",
}
#: SNOMED CT code and meaning of each branch (DICOM CID 3014), for the SR; OM without a
#: number has none.
SNOMED_OF_BRANCH: Final = {
    "LM": ("3227004", "Left main coronary artery"),
    "LAD": ("59438005", "Left anterior descending coronary artery"),
    "D-1": ("91750005", "First diagonal coronary artery"),
    "D-2": ("91751009", "Second diagonal coronary artery"),
    "D-3": ("91752002", "Third diagonal coronary artery"),
    "LCX": ("57396003", "Circumflex coronary artery"),
    "OM-1": ("91754001", "First obtuse marginal coronary artery"),
    "OM-2": ("91755000", "Second obtuse marginal coronary artery"),
    "OM-3": ("91756004", "Third obtuse marginal coronary artery"),
    "PDA-LCX": ("91760001", "Left posterior descending circumflex coronary artery"),
    "PLV-LCX": ("57823005", "Left posterolateral circumflex coronary artery"),
    "RI": ("244252004", "Ramus intermedius coronary artery"),
    "RCA": ("13647002", "Right coronary artery"),
    "PDA-RCA": ("53655008", "Posterior descending right coronary artery"),
    "PLV-RCA": ("17269004", "Posterolateral branch of right coronary artery"),
}
#: Canonical branch names, in reporting order.
BRANCHES: Final = tuple(ARTERY_OF_BRANCH)
ARTERIES: Final = ("LAD", "LCX", "RCA")
#: SCCT segment number -> canonical branch (CAD-RADS 18-segment model).
SCCT_SEGMENTS: Final = {
    1: "RCA",
    2: "RCA",
    3: "RCA",
    4: "PDA-RCA",
    5: "LM",
    6: "LAD",
    7: "LAD",
    8: "LAD",
    9: "D-1",
    10: "D-2",
    11: "LCX",
    12: "OM-1",
    13: "LCX",
    14: "OM-2",
    15: "PDA-LCX",
    16: "PLV-RCA",
    17: "RI",
    18: "PLV-LCX",
}

#: CAD-RADS grade of a maximal percent diameter stenosis: (lowest percent, grade).
GRADE_FLOORS: Final = (
    (100, "occluded"),
    (70, "severe"),
    (50, "moderate"),
    (25, "mild"),
    (1, "minimal"),
    (0, "none"),
)
GRADE_CLASS: Final = {
    "none": "no_stenosis",
    "minimal": "non_significant",
    "mild": "non_significant",
    "moderate": "significant",
    "severe": "significant",
    "occluded": "significant",
}
#: CAD-RADS categories that each class stands for (section 3 of the domain reference).
CAD_RADS_OF_CLASS: Final = {"no_stenosis": "0", "non_significant": "1-2", "significant": "3-5"}
GRADE_RANGE: Final = {
    "none": (0, 0),
    "minimal": (1, 24),
    "mild": (25, 49),
    "moderate": (50, 69),
    "severe": (70, 99),
    "occluded": (100, 100),
}
#: The six CAD-RADS 2.0 grades of a segment, least severe first.
GRADES: Final = tuple(GRADE_RANGE)
#: Class index of each grade index (none -> 0; minimal, mild -> 1; moderate and up -> 2).
CLASS_OF_GRADE: Final = tuple(CLASS_INDEX[GRADE_CLASS[grade]] for grade in GRADES)
#: CAD-RADS 2.0 patient categories, least severe first (the order of the weighted kappa).
CATEGORIES: Final = ("0", "1", "2", "3", "4A", "4B", "5")


def grade_of_percent(percent: float) -> str:
    """CAD-RADS grade word of a percent diameter stenosis (0 -> none, 100 -> occluded)."""
    for floor, grade in GRADE_FLOORS:
        if percent >= floor:
            return grade
    return "none"


def class_of_percent(percent: float) -> str:
    """Three-class label of a percent diameter stenosis; 50% counts as significant."""
    return GRADE_CLASS[grade_of_percent(percent)]


def grade_interval(
    stenosis_class: str, pct_low: float | None, pct_high: float | None
) -> tuple[int, int]:
    """The grade indices a branch label allows: those its percent range spans, within its
    class ("<50%" is minimal-mild, "25-50%" labelled mild is mild); without a range, every
    grade of the class."""
    of_class = [i for i, c in enumerate(CLASS_OF_GRADE) if c == CLASS_INDEX[stenosis_class]]
    if pct_low is None or pct_high is None:
        return of_class[0], of_class[-1]
    low = GRADES.index(grade_of_percent(pct_low))
    high = GRADES.index(grade_of_percent(pct_high))
    spanned = [i for i in of_class if low <= i <= high]
    return (spanned[0], spanned[-1]) if spanned else (of_class[0], of_class[-1])


def category_of_grades(grade_by_branch: dict[str, int]) -> str:
    """CAD-RADS 2.0 category of a patient's branch grades (indices into `GRADES`)."""
    return cad_rads_category(
        {branch: GRADE_RANGE[GRADES[grade]][0] for branch, grade in grade_by_branch.items()}
    )


def cad_rads_category(max_percent_by_branch: dict[str, float]) -> str:
    """CAD-RADS 2.0 category (0-5, 4A/4B) of a patient's maximal stenoses per branch."""
    if not max_percent_by_branch:
        return "0"
    worst = max(max_percent_by_branch.values())
    if worst >= 100:
        return "5"
    left_main = max_percent_by_branch.get("LM", 0)
    per_artery = {artery: 0.0 for artery in ARTERIES}
    for branch, pct in max_percent_by_branch.items():
        if branch != "LM":
            artery = ARTERY_OF_BRANCH[branch]
            per_artery[artery] = max(per_artery[artery], pct)
    if left_main >= 50 or all(pct >= 70 for pct in per_artery.values()):
        return "4B"
    if worst >= 70:
        return "4A"
    if worst >= 50:
        return "3"
    if worst >= 25:
        return "2"
    if worst >= 1:
        return "1"
    return "0"


def plaque_burden_of_sis(segments_with_plaque: int | None) -> str | None:
    """CAD-RADS plaque burden P1-P4 from a segment involvement score (1-2, 3-4, 5-7, >= 8)."""
    if not segments_with_plaque or segments_with_plaque <= 0:
        return None
    for floor, label in ((8, "P4"), (5, "P3"), (3, "P2")):
        if segments_with_plaque >= floor:
            return label
    return "P1"


def plaque_burden(agatston: float | None) -> str | None:
    """CAD-RADS plaque burden P1-P4 from an Agatston calcium score (None when 0 or unknown)."""
    if agatston is None or agatston <= 0:
        return None
    for floor, label in ((1000, "P4"), (301, "P3"), (101, "P2")):
        if agatston >= floor:
            return label
    return "P1"

"""Free-text CCTA reports written from the ground truth, in the styles radiologists use.

Every stenosis expression keeps the ground-truth class (a range reads by its lower bound, a
bare 50% is significant), so a correct parser recovers the labels exactly.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from cass_pipeline.domain.anatomy import (
    BRANCHES,
    GRADE_RANGE,
    SCCT_SEGMENTS,
    cad_rads_category,
    grade_of_percent,
    plaque_burden,
)
from cass_pipeline.domain.synthetic.coronary_tree import Branch, PatientAnatomy
from cass_pipeline.domain.synthetic.export import Identity

REPORT_STYLES = ("structured", "narrative", "scct", "label_table")
FAMILY_NAMES = (
    "Kowalski",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Fernandes",
    "Novak",
    "Hughes",
    "Petrenko",
    "Schmidt",
    "Ibrahim",
    "Rossi",
    "Nguyen",
    "Oconnell",
)
GIVEN_NAMES = {
    "F": ("Anna", "Maria", "Olena", "Grace", "Yuki", "Ingrid", "Fatima", "Claire"),
    "M": ("Jan", "Taras", "David", "Kenji", "Lars", "Omar", "Marco", "Pierre"),
}

LONG_NAMES = {
    "LM": "left main coronary artery",
    "LAD": "left anterior descending artery",
    "D-1": "first diagonal branch",
    "D-2": "second diagonal branch",
    "D-3": "third diagonal branch",
    "LCX": "left circumflex artery",
    "OM-1": "first obtuse marginal branch",
    "OM-2": "second obtuse marginal branch",
    "OM-3": "third obtuse marginal branch",
    "RI": "ramus intermedius",
    "RCA": "right coronary artery",
    "PDA-RCA": "posterior descending artery",
    "PLV-RCA": "posterolateral branch",
    "PDA-LCX": "posterior descending artery (from the LCx)",
    "PLV-LCX": "posterolateral branch of the circumflex",
}
SHORT_NAMES = {
    "LM": ("LM", "LMCA"),
    "LAD": ("LAD",),
    "D-1": ("D1", "Dg1"),
    "D-2": ("D2", "Dg2"),
    "D-3": ("D3",),
    "LCX": ("LCx", "Cx", "LCX"),
    "OM-1": ("OM1", "OM 1"),
    "OM-2": ("OM2", "OM 2"),
    "OM-3": ("OM3",),
    "RI": ("RI", "ramus"),
    "RCA": ("RCA",),
    "PDA-RCA": ("PDA", "RPDA"),
    "PLV-RCA": ("PLB", "RPLB", "PLV"),
    "PDA-LCX": ("L-PDA",),
    "PLV-LCX": ("L-PLB",),
}
#: SCCT segment numbers per branch, proximal first (the anatomy's map, inverted).
SEGMENTS_OF_BRANCH = {
    branch: tuple(n for n, of in sorted(SCCT_SEGMENTS.items()) if of == branch)
    for branch in dict.fromkeys(SCCT_SEGMENTS.values())
}
PLAQUE_WORDS = {
    "soft": ("non-calcified", "soft", "low-density"),
    "calcified": ("calcified",),
    "mixed": ("mixed", "partially calcified"),
}
LABEL_RANGES = (
    (1, 24, "<25%"),
    (25, 49, "25-50%"),
    (50, 69, "50-70%"),
    (70, 89, "70-90%"),
    (90, 99, "90-100%"),
)


def make_identity(rng: np.random.Generator) -> Identity:
    """A synthetic patient identity (name, date of birth, MRN, accession, exam date)."""
    sex = str(rng.choice(["F", "M"]))
    born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 45 * 365)))
    exam = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 900)))
    return Identity(
        family_name=str(rng.choice(FAMILY_NAMES)).upper(),
        given_name=str(rng.choice(GIVEN_NAMES[sex])),
        sex=sex,
        birth_date=born.strftime("%Y%m%d"),
        mrn=str(rng.integers(10_000_000, 99_999_999)),
        accession=f"A{exam.strftime('%Y%m%d')}{rng.integers(1000, 9999)}",
        exam_date=exam.strftime("%Y%m%d"),
    )


def position_word(fraction: float) -> str:
    return "proximal" if fraction < 0.33 else "mid" if fraction < 0.66 else "distal"


def stenosis_phrase(pct: float, rng: np.random.Generator) -> str:
    """A class-preserving way to write a percent stenosis."""
    grade = grade_of_percent(pct)
    if grade == "occluded":
        return str(rng.choice(["total occlusion", "occluded (100%)", "100% stenosis"]))
    low, high = GRADE_RANGE[grade]
    choice = rng.integers(4)
    if choice == 0:
        rounded = int(min(high, max(low, 5 * round(pct / 5))))
        return str(
            rng.choice(
                [
                    f"{rounded}% stenosis",
                    f"approximately {rounded}% stenosis",
                    f"{rounded} per cent stenosis",
                ]
            )
        )
    if choice == 1:
        return f"{grade} ({low}-{high}%) stenosis"
    if choice == 2:
        return f"{grade} stenosis"
    label = next(text for lo, hi, text in LABEL_RANGES if lo <= pct <= hi)
    return f"{label} stenosis"


def label_value(pct: float, rng: np.random.Generator) -> str:
    """The terse value of a label table: 'NORMAL', '-', '<25%', '50-70%', 'occluded'."""
    if pct <= 0:
        return str(rng.choice(["NORMAL", "-", "normal"]))
    if pct >= 100:
        return "occluded"
    return next(text for lo, hi, text in LABEL_RANGES if lo <= pct <= hi)


def branch_findings(branch: Branch, rng: np.random.Generator) -> list[str]:
    """Sentence fragments about the branch besides its stenosis: stent, bridge, high-risk plaque."""
    extra = []
    if branch.stent:
        extra.append(
            f"patent stent in the {position_word(branch.stent[0])} segment "
            "without in-stent restenosis"
        )
    if branch.bridge:
        extra.append(f"myocardial bridge of the {position_word(branch.bridge[0])} segment")
    if branch.lesion and branch.lesion.high_risk:
        extra.append(
            "the plaque shows high-risk features (low attenuation and positive remodelling)"
        )
    return extra


def normal_phrase(rng: np.random.Generator) -> str:
    return str(
        rng.choice(
            [
                "normal",
                "no stenosis",
                "no plaque or stenosis",
                "unremarkable",
                "patent without plaque",
            ]
        )
    )


def lesion_sentence(branch: Branch, rng: np.random.Generator, name: str) -> str:
    lesion = branch.lesion
    where = position_word(lesion.position)
    plaque = str(rng.choice(PLAQUE_WORDS[lesion.plaque]))
    return (
        f"{stenosis_phrase(lesion.stenosis_pct, rng)} of the {where} {name} due to {plaque} plaque"
    )


def impression(anatomy: PatientAnatomy) -> str:
    """'CAD-RADS 3/P2/S/HRP' and a summary of the most severe finding."""
    maxima = {n: b.stenosis_pct for n, b in anatomy.branches.items()}
    category = cad_rads_category(maxima)
    modifiers = [m for m in (plaque_burden(anatomy.agatston),) if m]
    if any(b.stent for b in anatomy.branches.values()):
        modifiers.append("S")
    if any(b.lesion and b.lesion.high_risk for b in anatomy.branches.values()):
        modifiers.append("HRP")
    worst = max(anatomy.branches.values(), key=lambda b: b.stenosis_pct)
    if worst.stenosis_pct <= 0:
        summary = "No coronary artery stenosis."
    else:
        grade = grade_of_percent(worst.stenosis_pct)
        finding = "total occlusion" if grade == "occluded" else f"{grade} stenosis"
        summary = f"Most severe: {finding} of the {LONG_NAMES[worst.name]}."
    return "CAD-RADS " + "/".join([category, *modifiers]) + ". " + summary


def header(identity: Identity, rng: np.random.Generator) -> str:
    fmt = str(rng.choice(["%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y"]))
    birth = date(
        int(identity.birth_date[:4]), int(identity.birth_date[4:6]), int(identity.birth_date[6:])
    )
    exam = date(
        int(identity.exam_date[:4]), int(identity.exam_date[4:6]), int(identity.exam_date[6:])
    )
    return (
        f"Patient: {identity.family_name}, {identity.given_name}    DOB: {birth.strftime(fmt)}    "
        f"MRN: {identity.mrn}\n"
        f"Accession: {identity.accession}    Exam date: {exam.strftime(fmt)}\n"
        "Examination: CT coronary angiography\n"
    )


def ordered(anatomy: PatientAnatomy) -> list[Branch]:
    return [anatomy.branches[n] for n in BRANCHES if n in anatomy.branches]


def body_structured(anatomy: PatientAnatomy, rng) -> list[str]:
    lines = []
    for branch in ordered(anatomy):
        name = str(rng.choice(SHORT_NAMES[branch.name]))
        parts = [lesion_sentence(branch, rng, name) if branch.lesion else normal_phrase(rng)]
        parts += branch_findings(branch, rng)
        text = "; ".join(parts)
        lines.append(f"{name}: {text[0].upper()}{text[1:]}.")
    return lines


def body_narrative(anatomy: PatientAnatomy, rng) -> list[str]:
    sentences = []
    for branch in ordered(anatomy):
        long = LONG_NAMES[branch.name]
        if branch.lesion:
            sentence = f"The {long} shows {lesion_sentence(branch, rng, 'segment')}."
        else:
            sentence = str(
                rng.choice(
                    [
                        f"The {long} is normal.",
                        f"No stenosis of the {long}.",
                        f"There is no plaque in the {long}.",
                    ]
                )
            )
        for extra in branch_findings(branch, rng):
            sentence += (
                f" In the {long} there is a {extra}."
                if extra.startswith("patent") or extra.startswith("myocardial")
                else f" In the {long}, {extra}."
            )
        sentences.append(sentence)
    return [" ".join(sentences)]


def body_scct(anatomy: PatientAnatomy, rng) -> list[str]:
    lines = []
    for branch in ordered(anatomy):
        segments = SEGMENTS_OF_BRANCH.get(branch.name)
        short = SHORT_NAMES[branch.name][0]
        if not segments:
            text = lesion_sentence(branch, rng, short) if branch.lesion else normal_phrase(rng)
            lines.append(f"{short}: {text}.")
            continue
        lesion_segment = None
        if branch.lesion:
            lesion_segment = segments[
                min(len(segments) - 1, int(branch.lesion.position * len(segments)))
            ]
        for number in segments:
            if number == lesion_segment:
                lesion = branch.lesion
                plaque = str(rng.choice(PLAQUE_WORDS[lesion.plaque]))
                text = f"{stenosis_phrase(lesion.stenosis_pct, rng)}, {plaque} plaque"
            else:
                text = normal_phrase(rng)
            lines.append(f"Segment {number} ({short}): {text}.")
        for extra in branch_findings(branch, rng):
            lines.append(f"{short}: {extra}.")
    return lines


def body_label_table(anatomy: PatientAnatomy, rng) -> list[str]:
    lines = []
    for branch in ordered(anatomy):
        short = SHORT_NAMES[branch.name][0]
        lines.append(f"{short}: {label_value(branch.stenosis_pct, rng)}")
        lines += [f"{short}: {extra}" for extra in branch_findings(branch, rng)]
    return lines


BODIES = {
    "structured": body_structured,
    "narrative": body_narrative,
    "scct": body_scct,
    "label_table": body_label_table,
}


def write_report(
    anatomy: PatientAnatomy, identity: Identity, style: str, rng: np.random.Generator
) -> str:
    """The whole report: identifying header, technique, findings, impression."""
    parts = [
        header(identity, rng),
        "Indication: chest pain, intermediate pre-test probability.",
        "Technique: prospectively ECG-triggered coronary CTA, 100 kV, iodinated contrast.",
    ]
    if anatomy.agatston > 0 or rng.random() < 0.5:
        parts.append(f"Coronary artery calcium score (Agatston): {anatomy.agatston:.0f}.")
    parts.append(f"Coronary dominance: {anatomy.dominance}.")
    parts.append("\nFINDINGS:")
    parts += BODIES[style](anatomy, rng)
    parts.append("\nIMPRESSION:\n" + impression(anatomy))
    return "\n".join(parts) + "\n"

"""Free-text CCTA reports written from the ground truth, in the styles radiologists use.

Every stenosis expression keeps the ground-truth class (a range reads by its lower bound, a
bare 50% is significant), so a correct parser recovers the labels exactly. Besides the body
styles (structured, narrative, SCCT segments, label table, template, dictation), reports
carry what real ones do: a clinical history with percentages, technique lines with phases,
an addendum that corrects a first, wrong grade, and segments the study could not assess
(`WrittenReport.non_diagnostic`: branches without an exported series whose grade is below
50% in patients with a significant lesion elsewhere, so the patient's category stands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
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

#: Shares of reports with an addendum that corrects a grade, and with a non-assessable segment.
ADDENDUM_RATE, NON_DIAGNOSTIC_RATE = 0.15, 0.3
HISTORIES = (
    "Clinical history: atypical chest pain; father had a 90% LAD stenosis at 52.",
    "Clinical history: exertional dyspnoea. Invasive angiography in 2019 reported a 40% RCA "
    "lesion.",
    "History: hypertension, smoker; brother with CABG at 60.",
    "Clinical history: chest pain, intermediate pre-test probability.",
)
TECHNIQUES = (
    "Technique: prospectively ECG-triggered coronary CTA, 100 kV, iodinated contrast.",
    "Technique: retrospective gating, reconstructions at 40% and 75% of the R-R interval; "
    "heart rate 58 bpm after 5 mg metoprolol; 70 mL contrast.",
    "Technique: prospective gating at 70-80% of the R-R interval, 120 kV, heart rate 64 bpm.",
)
#: CAD-RADS grade boxes of a checkbox template, by the grade they tick.
TEMPLATE_BOXES = (
    ("none", "0%"),
    ("minimal", "1-24%"),
    ("mild", "25-49%"),
    ("moderate", "50-69%"),
    ("severe", "70-99%"),
    ("occluded", "100%"),
)


@dataclass(frozen=True)
class WrittenReport:
    """A report's text and the branches it calls non-diagnostic (they get no label)."""

    text: str
    non_diagnostic: tuple[str, ...] = ()


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
                "no stenosis or occlusion",
                "plaque-free",
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
                        f"Plaque was not seen in the {long}.",
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


def body_template(anatomy: PatientAnatomy, rng) -> list[str]:
    """A checkbox form (one ticked grade box per branch) or a pipe table by SCCT segment."""
    if rng.random() < 0.5:
        lines = []
        for branch in ordered(anatomy):
            ticked = grade_of_percent(branch.stenosis_pct)
            boxes = "  ".join(
                f"[{'x' if grade == ticked else ' '}] {text}" for grade, text in TEMPLATE_BOXES
            )
            short = SHORT_NAMES[branch.name][0]
            lines.append(f"{short + ':':<8}{boxes}")
            lines += [f"{short}: {extra}." for extra in branch_findings(branch, rng)]
        return lines
    lines, notes = ["| Segment | Vessel | Stenosis |", "|---|---|---|"], []
    for branch in ordered(anatomy):
        short = SHORT_NAMES[branch.name][0]
        value = label_value(branch.stenosis_pct, rng)
        value = "0%" if value == "-" else value
        segments = SEGMENTS_OF_BRANCH.get(branch.name) or ("-",)
        lesion_segment = segments[
            min(
                len(segments) - 1,
                int((branch.lesion.position if branch.lesion else 0) * len(segments)),
            )
        ]
        for number in segments:
            cell = value if number == lesion_segment else "0%"
            lines.append(f"| {number} | {short} | {cell} |")
        notes += [f"{short}: {extra}." for extra in branch_findings(branch, rng)]
    return lines + notes


def dictated(text: str) -> str:
    """A phrase as dictation software writes it: lower case, no punctuation, "percent"."""
    text = text.lower().replace("%", " percent").replace("(", "").replace(")", "")
    return " ".join(re.sub(r"[,;:.](?!\d)", " ", text).split())


def body_dictation(anatomy: PatientAnatomy, rng) -> list[str]:
    lines = []
    for branch in ordered(anatomy):
        name = str(rng.choice(SHORT_NAMES[branch.name])).lower()
        if branch.lesion:
            where = position_word(branch.lesion.position)
            phrase = f"{where} {stenosis_phrase(branch.lesion.stenosis_pct, rng)}"
        else:
            phrase = str(rng.choice(["normal", "no stenosis", "unremarkable"]))
        extras = " ".join(branch_findings(branch, rng))
        lines.append(dictated(f"{name} {phrase} {extras}"))
    return lines


#: The code of each SCCT segment in a coded export ("seg06_pLAD").
SEGMENT_CODES = {
    1: "pRCA",
    2: "mRCA",
    3: "dRCA",
    4: "RPDA",
    5: "LM",
    6: "pLAD",
    7: "mLAD",
    8: "dLAD",
    9: "D1",
    10: "D2",
    11: "pCx",
    12: "OM1",
    13: "dCx",
    14: "OM2",
    15: "LPDA",
    16: "RPLB",
    17: "RI",
    18: "LPLB",
}
#: Branches whose long name a typing error may hit (the others' names are side-specific).
TYPO_SAFE = set(LONG_NAMES) - {"PDA-LCX", "PLV-LCX", "PDA-RCA", "PLV-RCA"}


#: Words of a long name that do not tell the vessel (a typing error there changes nothing).
GENERIC_WORDS = {"coronary", "artery", "branch"}


def mistyped(name: str, rng) -> str:
    """The name with two neighbouring letters of its longest telling word swapped
    ("circmuflex")."""
    words = name.split()
    i = max(range(len(words)), key=lambda k: (words[k] not in GENERIC_WORDS, len(words[k])))
    word = words[i]
    if len(word) < 6:
        return name
    j = int(rng.integers(2, len(word) - 2))
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def body_coded(anatomy: PatientAnatomy, rng) -> list[str]:
    """Another vendor's structured export: a legend, one coded row per SCCT segment with its
    percent and no sign ("seg06_pLAD=60"), NAD for a normal branch without a segment, and a
    comment per lesion whose vessel name may carry a typing error."""
    legend = "n.e. = not evaluable, n.a. = not applicable"
    lines = ["Structured export", f"Legend: {legend}" if rng.random() < 0.5 else legend]
    comments = []
    for branch in ordered(anatomy):
        segments = SEGMENTS_OF_BRANCH.get(branch.name)
        lesion = branch.lesion
        value = 0
        if lesion:
            low, high = GRADE_RANGE[grade_of_percent(lesion.stenosis_pct)]
            value = int(min(high, max(low, round(lesion.stenosis_pct))))
        if segments:
            where = min(len(segments) - 1, int((lesion.position if lesion else 0) * len(segments)))
            lines += [
                f"seg{n:02d}_{SEGMENT_CODES[n]}={value if k == where else 0}"
                for k, n in enumerate(segments)
            ]
        else:
            short = SHORT_NAMES[branch.name][0]
            lines.append(f"{short}: {value}% stenosis" if value else f"{short}: NAD")
        if lesion and branch.name in TYPO_SAFE:
            name = LONG_NAMES[branch.name]
            name = mistyped(name, rng) if rng.random() < 0.5 else name
            comments.append(f"Comment: {name[0].upper()}{name[1:]}: {stenosis_phrase(value, rng)}.")
        comments += [
            f"{SHORT_NAMES[branch.name][0]}: {extra}." for extra in branch_findings(branch, rng)
        ]
    return lines + comments


BODIES = {
    "coded": body_coded,
    "structured": body_structured,
    "narrative": body_narrative,
    "scct": body_scct,
    "label_table": body_label_table,
    "template": body_template,
    "dictation": body_dictation,
}


def first_reading(
    anatomy: PatientAnatomy, rng, unread: tuple[str, ...]
) -> tuple[PatientAnatomy, str | None]:
    """The anatomy as a first, wrong reading grades it (one lesion a grade off, none of the
    `unread` branches) and the branch it got wrong; or the anatomy itself and None."""
    lesions = [
        b
        for b in ordered(anatomy)
        if b.lesion and 1 <= b.stenosis_pct < 100 and b.name not in unread
    ]
    if not lesions or rng.random() >= ADDENDUM_RATE:
        return anatomy, None
    branch = lesions[int(rng.integers(len(lesions)))]
    floors = (1, 25, 50, 70)
    grade = max(i for i, floor in enumerate(floors) if branch.stenosis_pct >= floor)
    step = -1 if grade == 3 or (grade > 0 and rng.random() < 0.5) else 1
    lesion = replace(branch.lesion, stenosis_pct=float(floors[grade + step] + 5))
    branches = {**anatomy.branches, branch.name: replace(branch, lesion=lesion)}
    return replace(anatomy, branches=branches), branch.name


def non_assessable(anatomy: PatientAnatomy, rng) -> tuple[str, ...]:
    """A branch the study could not assess: one without an exported series and below 50%,
    in a patient with a significant lesion elsewhere; or none."""
    if max(b.stenosis_pct for b in anatomy.branches.values()) < 50:
        return ()
    candidates = [b.name for b in ordered(anatomy) if not b.exported and b.stenosis_pct < 50]
    if not candidates or rng.random() >= NON_DIAGNOSTIC_RATE:
        return ()
    return (candidates[int(rng.integers(len(candidates)))],)


def write_report(
    anatomy: PatientAnatomy, identity: Identity, style: str, rng: np.random.Generator
) -> WrittenReport:
    """The whole report: identifying header, history, technique, findings, impression, and
    an addendum where the first reading got a grade wrong."""
    parts = [header(identity, rng), str(rng.choice(HISTORIES)), str(rng.choice(TECHNIQUES))]
    if anatomy.agatston > 0 or rng.random() < 0.5:
        parts.append(f"Coronary artery calcium score (Agatston): {anatomy.agatston:.0f}.")
    parts.append(f"Coronary dominance: {anatomy.dominance}.")
    missing = non_assessable(anatomy, rng)
    read, corrected = first_reading(anatomy, rng, missing)
    shown = replace(read, branches={n: b for n, b in read.branches.items() if n not in missing})
    parts.append("\nFINDINGS:")
    parts += BODIES[style](shown, rng)
    for name in missing:
        line = f"{SHORT_NAMES[name][0]}: not assessable owing to severe motion artefact."
        parts.append(dictated(line) if style == "dictation" else line)
    suffix = "/N" if missing else ""
    summary = impression(read).replace(". ", suffix + ". ", 1)
    if style == "dictation":  # the category alone: "most severe moderate stenosis" is no label
        summary = dictated(summary.split(". ")[0])
    parts.append(("\nimpression " if style == "dictation" else "\nIMPRESSION:\n") + summary)
    if corrected:
        branch = anatomy.branches[corrected]
        where = position_word(branch.lesion.position)
        phrase = stenosis_phrase(branch.stenosis_pct, rng)
        parts.append(
            "\nADDENDUM: on review of the systolic reconstructions the "
            f"{where} {LONG_NAMES[corrected]} lesion is {phrase}.\n"
            "Revised impression: " + impression(anatomy).replace(". ", suffix + ". ", 1)
        )
    return WrittenReport("\n".join(parts) + "\n", missing)


def report_truth(anatomy: PatientAnatomy, report: WrittenReport) -> tuple[dict, str]:
    """The branch classes a correct reading of `report` gives (None for the branches it calls
    non-diagnostic) and its CAD-RADS category (the non-assessable branch never changes it)."""
    classes = {
        name: None if name in report.non_diagnostic else branch.stenosis_class
        for name, branch in anatomy.branches.items()
    }
    return classes, cad_rads_category({n: b.stenosis_pct for n, b in anatomy.branches.items()})

"""From report mentions to branch labels, the patient class and the CAD-RADS category.

Rules:
- A percent range reads by its lower bound ("25-50%" is mild); "<X" is 1..X-1; ">X" is
  X+1..99; a negated grade ("no significant stenosis") is the range below it (0-49), which
  reads as no stenosis; combined words ("mild to moderate") take the more severe grade.
- A bare 50% is significant (CAD-RADS 3), unless `bare_50_significant=False`.
- Branch class = most severe finding on the branch; where an addendum or a corrected
  impression grades the branch again, its grade replaces the earlier ones (up or down).
  A stent (without restenosis) or a myocardial bridge alone is not stenosis: the branch is
  no_stenosis; high-risk plaque alone is minimal plaque; a graft's findings and a graft
  alone say nothing of the native branch (no label). A non-diagnostic branch gets no label
  unless a finding on it is already significant.
- Patient class = most severe branch; CAD-RADS 2.0 category from the branch maxima (4B for
  left main >= 50% or >= 70% in all three arteries); N, and no patient class, when a segment
  or the whole study is non-diagnostic and nothing obstructive is found. Modifiers: P1-P4
  from the calcium score (else the segment involvement score), N, HRP, S, G, E, I+/I-/I+/-.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cass_pipeline.domain.anatomy import (
    BRANCHES,
    GRADE_RANGE,
    STENOSIS_CLASSES,
    cad_rads_category,
    class_of_percent,
    plaque_burden,
    plaque_burden_of_sis,
)
from cass_pipeline.domain.reports.config import ReportSettings
from cass_pipeline.domain.reports.parser import Mention, ReportReading


@dataclass
class BranchLabel:
    """The label of one branch and the text spans it rests on."""

    branch: str
    stenosis_class: str | None
    pct_low: int | None
    pct_high: int | None
    evidence: list[str] = field(default_factory=list)
    evidence_spans: list[tuple[int, int]] = field(default_factory=list)
    non_diagnostic: bool = False
    modifiers: list[str] = field(default_factory=list)
    #: Which rule of this module set the class (`cass parse-report --explain` prints it).
    rule: str = ""
    #: "report" (parsed), "review" (a reviewer's override, with the reviewer's note) or
    #: `READER` (a reader's verdict on CASS's answer, `review/cohort.py`).
    source: str = "report"
    note: str | None = None


@dataclass
class ReportLabels:
    """Labels of one report, with what makes them doubtful (`flags.report_flags`)."""

    branches: dict[str, BranchLabel]
    patient_class: str | None
    cad_rads: str | None
    modifiers: list[str]
    reading: ReportReading
    flags: list = field(default_factory=list)
    #: A reviewer has seen the report (overrides applied, or its labels accepted).
    reviewed: bool = False


#: The source of a label a reader gave in the reading room (no report behind it).
READER = "reader"
RULE_MOST_SEVERE = "the most severe finding on the branch"
RULE_REVISED = "the addendum's grade, in place of the earlier ones"
RULE_DEVICE_ONLY = "a stent or a myocardial bridge alone is no stenosis"
RULE_HRP_ONLY = "high-risk plaque alone is minimal plaque"
RULE_NO_GRADE = "no grade of the native branch"
RULE_NON_DIAGNOSTIC = "non-diagnostic and not significant: no label"


def finding_class(mention: Mention, bare_50_significant: bool) -> str:
    if mention.bare_50 and not bare_50_significant:
        return "non_significant"
    return class_of_percent(mention.pct_low)


def label_branch(
    branch: str, mentions: list[Mention], bare_50_significant: bool, reading: ReportReading
) -> BranchLabel:
    findings = [m for m in mentions if m.pct_low is not None and not m.on_graft]
    revised = [m for m in findings if reading.revises(m)]
    rule = RULE_REVISED if revised and len(revised) < len(findings) else RULE_MOST_SEVERE
    findings = revised or findings  # an addendum's grade replaces the earlier ones
    modifiers = sorted({m.modifier for m in mentions if m.modifier and not m.negated})
    non_diagnostic = "N" in modifiers
    if findings:
        top = max(
            findings,
            key=lambda m: (
                STENOSIS_CLASSES.index(finding_class(m, bare_50_significant)),
                m.pct_low,
                m.pct_high,
            ),
        )
        decisive = [m for m in findings if (m.pct_low, m.pct_high) == (top.pct_low, top.pct_high)]
        label = BranchLabel(
            branch,
            finding_class(top, bare_50_significant),
            top.pct_low,
            top.pct_high,
            [m.text for m in decisive],
            [(m.start_char, m.end_char) for m in decisive],
            rule=rule,
        )
    else:
        support = [
            m for m in mentions if m.modifier and not m.negated and m.modifier not in {"N", "G"}
        ]
        if support:
            # High-risk plaque alone is plaque without a grade; stent, bridge: none. A graft
            # says nothing of the native branch.
            hrp = any(m.modifier == "HRP" for m in support)
            low, high = GRADE_RANGE["minimal" if hrp else "none"]
            label = BranchLabel(
                branch,
                class_of_percent(low),
                low,
                high,
                [m.text for m in support],
                [(m.start_char, m.end_char) for m in support],
                rule=RULE_HRP_ONLY if hrp else RULE_DEVICE_ONLY,
            )
        else:
            label = BranchLabel(
                branch,
                None,
                None,
                None,
                [m.text for m in mentions],
                [(m.start_char, m.end_char) for m in mentions],
                rule=RULE_NO_GRADE,
            )
    label.modifiers = [m for m in modifiers if m != "bridge"]
    label.non_diagnostic = non_diagnostic
    if non_diagnostic and label.stenosis_class != "significant":
        label.stenosis_class, label.rule = None, RULE_NON_DIAGNOSTIC
    return label


def label_report(
    reading: ReportReading, bare_50_significant: bool = ReportSettings.bare_50_significant
) -> ReportLabels:
    """Branch labels, patient class and CAD-RADS of one report reading."""
    by_branch: dict[str, list[Mention]] = {}
    for mention in reading.mentions:
        for branch in mention.branches:
            by_branch.setdefault(branch, []).append(mention)
    branches = {
        b: label_branch(b, by_branch[b], bare_50_significant, reading)
        for b in BRANCHES
        if b in by_branch
    }
    return summarise(branches, reading)


def summarise(branches: dict[str, BranchLabel], reading: ReportReading) -> ReportLabels:
    """The patient class, CAD-RADS category and modifiers of a report's branch labels."""
    labelled = [lab for lab in branches.values() if lab.stenosis_class is not None]
    patient_class = None
    if labelled:
        patient_class = max((lab.stenosis_class for lab in labelled), key=STENOSIS_CLASSES.index)
    elif reading.globally_normal and not branches:  # "Normal coronary arteries."
        patient_class = "no_stenosis"
    category = "0" if patient_class and not branches else None
    if labelled:
        maxima = {
            lab.branch: (
                49 if lab.stenosis_class == "non_significant" and lab.pct_low >= 50 else lab.pct_low
            )
            for lab in labelled
        }
        category = cad_rads_category(maxima)
    non_diagnostic = any(lab.non_diagnostic for lab in branches.values()) or any(
        m.modifier == "N" and not m.branches and not m.negated for m in reading.mentions
    )
    if non_diagnostic and category in {None, "0", "1", "2"}:
        category = "N"  # obstructive disease is not excluded: no patient class
        patient_class = None
    burden = plaque_burden(reading.calcium_score) or plaque_burden_of_sis(
        reading.segment_involvement
    )
    modifiers = [burden] if burden else []
    if non_diagnostic and category != "N":
        modifiers.append("N")
    for code in ("HRP", "S", "G"):
        if any(code in lab.modifiers for lab in branches.values()):
            modifiers.append(code)
    modifiers += [code for code in ("E" if reading.anomalous else None, reading.ischaemia) if code]
    for code in reading.stated_modifiers:  # "CAD-RADS 2/P2/HRP": what the reader states
        if code not in modifiers and not (code == "N" and category == "N"):
            modifiers.append(code)
    return ReportLabels(branches, patient_class, category, modifiers, reading)


def labels_json(labels: ReportLabels) -> dict:
    """The `cass parse-report --json` object."""
    return {
        "branches": {
            name: {
                "stenosis_class": lab.stenosis_class,
                "max_stenosis_pct": None if lab.pct_low is None else [lab.pct_low, lab.pct_high],
                "evidence": lab.evidence,
            }
            for name, lab in labels.branches.items()
        },
        "patient_class": labels.patient_class,
        "cad_rads": {"category": labels.cad_rads, "modifiers": labels.modifiers},
        "flags": [
            {
                "kind": flag.kind,
                "holds": flag.holds,
                "detail": flag.detail,
                "branch": flag.branch,
                "evidence": flag.evidence,
            }
            for flag in labels.flags
        ],
    }


def labels_lines(result: dict) -> list[str]:
    """`labels_json`'s object as `cass parse-report` prints it: a line per branch, then the
    patient, then each flag that holds the report for review."""
    lines = []
    for name, branch in result["branches"].items():
        pct = branch["max_stenosis_pct"]
        pct_text = "-" if pct is None else f"{pct[0]}-{pct[1]}%"
        lines.append(
            f"{name:<8} {branch['stenosis_class'] or 'no label':<16} {pct_text:<9} "
            f"{'; '.join(branch['evidence'])}"
        )
    cad = result["cad_rads"]
    category = "/".join([cad["category"] or "?", *cad["modifiers"]])
    held = [f"held for review: {f['kind']}: {f['detail']}" for f in result["flags"] if f["holds"]]
    return [*lines, f"patient: {result['patient_class']}; CAD-RADS {category}", *held]

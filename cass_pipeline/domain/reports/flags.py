"""What makes a report's labels doubtful, each with the sentence that shows it.

A rule-based reading that meets something it does not account for says so instead of
guessing with confidence. Flags that hold a report out of training until a person reviews
it (`HOLDING`): the stated CAD-RADS disagrees with the one derived from the branch grades; a
stenosis statement that no branch took is more severe than every branch; a branch graded
differently in the findings and in the impression; grade evidence left unread; words of a
language whose vocabulary file is not in use; a negation that negates no finding in a
clause that grades a branch. The others are notes for the reviewer.
"""

from __future__ import annotations

from dataclasses import dataclass

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.reports.config import ReportSettings
from cass_pipeline.domain.reports.labels import ReportLabels, finding_class
from cass_pipeline.domain.reports.parser import PLACED_BY_DOUBTFUL_PRONOUN, Mention

STATED_DISAGREES = "stated CAD-RADS disagrees"
UNPLACED = "stenosis statement on no branch"
GRADED_TWICE = "branch graded twice"
REVISED = "addendum revised a finding"
NON_DIAGNOSTIC = "non-diagnostic segments"
TYPO = "word read despite a typing error"
UNREAD_GRADE = "grade evidence left unread"
NOTHING_READ = "vessel findings not read"
UNREAD = "evidence left unread"
FOREIGN_WORDS = "words of a language not in use"
LOOSE_NEGATION = "negation on no finding"
DOUBTFUL_PRONOUN = "'it' may mean another vessel"
#: Flags that hold a report out of training until it is reviewed.
HOLDING = (
    STATED_DISAGREES,
    UNPLACED,
    GRADED_TWICE,
    UNREAD_GRADE,
    NOTHING_READ,
    DOUBTFUL_PRONOUN,
    FOREIGN_WORDS,
    LOOSE_NEGATION,
)


@dataclass(frozen=True)
class Flag:
    """One doubt about a report: its kind, what it says, and the sentence that shows it."""

    kind: str
    detail: str
    evidence: str
    start_char: int
    end_char: int
    branch: str | None = None

    @property
    def holds(self) -> bool:
        return self.kind in HOLDING


def report_flags(
    labels: ReportLabels, bare_50_significant: bool = ReportSettings.bare_50_significant
) -> list[Flag]:
    """Every flag of one report's labels, in the order of the text."""
    reading = labels.reading

    def at(mention: Mention, kind: str, detail: str, branch: str | None = None) -> Flag:
        start, end = reading.sentences[mention.sentence_index]
        return Flag(kind, detail, reading.sentence_of(mention), start, end, branch)

    def severity(mention: Mention) -> int:
        return STENOSIS_CLASSES.index(finding_class(mention, bare_50_significant))

    flags = []
    stated, derived = reading.stated_cad_rads, labels.cad_rads
    agrees = stated == derived or (derived == "N" and "N" in reading.stated_modifiers)
    if stated is not None and not agrees:
        start, end = reading.stated_span
        line_start = reading.text.rfind("\n", 0, start) + 1
        line_end = reading.text.find("\n", end)
        line_end = len(reading.text) if line_end < 0 else line_end
        flags.append(
            Flag(
                STATED_DISAGREES,
                f"stated {stated}, derived {derived or 'none'} from the branch grades",
                reading.text[line_start:line_end].strip(),
                line_start,
                line_end,
            )
        )
    findings = [m for m in reading.mentions if m.pct_low is not None and not m.on_graft]
    worst = STENOSIS_CLASSES.index(labels.patient_class) if labels.patient_class else 0
    for mention in findings:
        if not mention.branches and not mention.negated and severity(mention) > worst:
            flags.append(at(mention, UNPLACED, f"'{mention.text}' names no vessel CASS grades"))
    if reading.impression_start is not None:
        for name in labels.branches:
            on_branch = [m for m in findings if name in m.branches and not reading.revises(m)]
            before = [m for m in on_branch if m.start_char < reading.impression_start]
            after = [m for m in on_branch if m.start_char >= reading.impression_start]
            if before and after:
                first, second = max(before, key=severity), max(after, key=severity)
                if severity(first) != severity(second):
                    detail = f"'{first.text}' in the findings, '{second.text}' in the impression"
                    flags.append(at(second, GRADED_TWICE, detail, name))
    for name in labels.branches:
        revised = [m for m in findings if name in m.branches and reading.revises(m)]
        earlier = [m for m in findings if name in m.branches and not reading.revises(m)]
        if revised and earlier:
            old, new = max(earlier, key=severity), max(revised, key=severity)
            if (old.pct_low, old.pct_high) != (new.pct_low, new.pct_high):
                flags.append(at(new, REVISED, f"'{old.text}' revised to '{new.text}'", name))
    for name, branch in labels.branches.items():
        if branch.non_diagnostic:
            cause = next(m for m in reading.mentions if name in m.branches and m.modifier == "N")
            flags.append(at(cause, NON_DIAGNOSTIC, f"{name} not assessable: no label", name))
    for mention in findings:
        if mention.placed_by == PLACED_BY_DOUBTFUL_PRONOUN and severity(mention) > 0:
            detail = f"'{mention.text}' placed on {', '.join(mention.branches)}, the last named"
            flags.append(at(mention, DOUBTFUL_PRONOUN, detail, mention.branches[0]))
    for mention in reading.mentions:
        if mention.modifier == "N" and not mention.branches and not mention.negated:
            flags.append(at(mention, NON_DIAGNOSTIC, "the study is non-diagnostic"))
    for use in (u for u in reading.words if u.distance):
        start, end = sentence_around(reading, use.start_char)
        detail = f"'{use.written}' read as '{use.word.text}' ({use.word.source})"
        flags.append(Flag(TYPO, detail, reading.text[start:end].strip(), start, end))
    flags += coverage_flags(labels)
    unique = {(f.kind, f.start_char, f.branch, f.detail): f for f in flags}
    return sorted(unique.values(), key=lambda f: (f.start_char, f.kind))


def coverage_flags(labels: ReportLabels) -> list[Flag]:
    """Nothing unread in silence: a percentage or grade word no label used, in a sentence
    that names a branch left without a label, holds the report; so does a report with vessel
    words or percentages but no label at all, and so does a word of a language not in use;
    any other unread evidence is a note."""
    reading, flags = labels.reading, []
    unlabelled = {
        b
        for u in reading.unread
        for b in u.branches
        if b not in labels.branches
        or (labels.branches[b].stenosis_class is None and not labels.branches[b].non_diagnostic)
    }
    for u in reading.unread:
        start, end = reading.sentences[u.sentence_index]
        evidence = reading.sentence_of(u)
        missing = sorted(set(u.branches) & unlabelled)
        if u.kind == "foreign":
            continue
        if u.kind == "negation":
            keeps = "keeps" if len(u.branches) == 1 else "keep"
            detail = f"'{u.text}' negates no finding, yet {', '.join(u.branches)} {keeps} a grade"
            flags.append(Flag(LOOSE_NEGATION, detail, evidence, start, end, u.branches[0]))
        elif u.kind in ("percent", "grade") and missing:
            detail = f"'{u.text}' ({u.kind}) not read, and {', '.join(missing)} has no label"
            flags.append(Flag(UNREAD_GRADE, detail, evidence, start, end, missing[0]))
        else:
            flags.append(Flag(UNREAD, f"'{u.text}' ({u.kind}) not read", evidence, start, end))
    for source in sorted({u.source for u in reading.unread if u.kind == "foreign"}):
        found = [u for u in reading.unread if u.kind == "foreign" and u.source == source]
        start, end = reading.sentences[found[0].sentence_index]
        words = ", ".join(dict.fromkeys(f"'{u.text}'" for u in found))
        detail = f"{words}: words of {source}, which is not in use (CASS_REPORT_VOCABULARY)"
        flags.append(Flag(FOREIGN_WORDS, detail, reading.sentence_of(found[0]), start, end))
    nothing = labels.patient_class is None and not any(
        lab.stenosis_class or lab.non_diagnostic for lab in labels.branches.values()
    )
    telling = [u for u in reading.unread if u.kind in ("vessel", "percent", "segment")]
    if nothing and telling and labels.cad_rads != "N":
        start, end = reading.sentences[telling[0].sentence_index]
        detail = f"{len(telling)} vessel names or percentages, and no branch labelled"
        flags.append(Flag(NOTHING_READ, detail, reading.sentence_of(telling[0]), start, end))
    return flags


def sentence_around(reading, position: int) -> tuple[int, int]:
    """The span of the sentence holding a character."""
    return next(((a, b) for a, b in reading.sentences if a <= position < b), (position, position))


def held_for_review(labels: ReportLabels) -> bool:
    """Whether the report waits for a reviewer before its labels may be trained on."""
    return not labels.reviewed and any(flag.holds for flag in labels.flags)

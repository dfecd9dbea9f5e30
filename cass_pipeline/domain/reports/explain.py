"""`cass parse-report --explain`: each branch's grade with the sentence and the rules that set
it, then every flag."""

from __future__ import annotations

from cass_pipeline.domain.reports.labels import ReportLabels
from cass_pipeline.domain.reports.vocabulary import CONCEPT_NAMES, WordUse


def explain_lines(labels: ReportLabels) -> list[str]:
    """Per branch: class, range and the labelling rule, then each decisive sentence with the
    rule that placed it on the branch; the patient; the flags (HOLD: kept out of training)."""
    reading, lines = labels.reading, []
    for name, lab in labels.branches.items():
        pct = "-" if lab.pct_low is None else f"{lab.pct_low}-{lab.pct_high}%"
        lines.append(f"{name:<8} {lab.stenosis_class or 'no label':<16} {pct:<9} {lab.rule}")
        if lab.source == "review":
            lines.append(f"    reviewer's note: {lab.note or '-'}")
        spans = set(lab.evidence_spans)
        for mention in reading.mentions:
            if name in mention.branches and (mention.start_char, mention.end_char) in spans:
                lines.append(
                    f'    "{reading.sentence_of(mention)}"  '
                    f"[{mention.text!r} placed by {mention.placed_by}]"
                )
    lines += word_lines(reading.words)
    lines += [
        f"unread {f'word of {u.source}' if u.source else u.kind} {u.text!r}: "
        f'"{reading.sentence_of(u)}"'
        for u in reading.unread
    ]
    category = "/".join([labels.cad_rads or "?", *labels.modifiers])
    stated = reading.stated_cad_rads or "none"
    lines.append(f"patient: {labels.patient_class}; CAD-RADS {category} (stated: {stated})")
    lines.append("flags:" if labels.flags else "flags: none")
    for flag in labels.flags:
        where = f" {flag.branch}" if flag.branch else ""
        lines.append(
            f"  {'HOLD' if flag.holds else 'note'} {flag.kind}{where}: {flag.detail}\n"
            f'    "{flag.evidence}"'
        )
    return lines


def word_lines(words: list[WordUse]) -> list[str]:
    """Each word a vocabulary file gave, with the file; a typing error with what it was read
    as."""
    lines = ["words from vocabulary files:"] if words else []
    for use in words:
        word = use.word
        meaning = f"{CONCEPT_NAMES[word.concept]} {word.value}".rstrip()
        if use.distance:
            lines.append(
                f"  {use.written!r} read as {word.text!r} ({meaning}; {word.source}; "
                f"typing error, edit distance {use.distance})"
            )
        else:
            lines.append(f"  {use.written!r}: {meaning} ({word.source})")
    return lines

"""De-identification of report text (pseudonyms for patient keys live in `privacy.py`).

Rules, applied in order, each replacing the match by a bracketed tag:
1. header fields: patient name, date of birth, MRN / patient id, accession number, address
   and phone lines; the values found are also scrubbed wherever else they occur;
   (not inside a clinical phrase: a patient named Main keeps "Left main" readable);
2. doctors' names after "Dr";
3. every date (numeric or with a month name), phone number and digit run of 7 or more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cass_pipeline.domain.cohort.report_sources import (
    ACCESSION_FIELD,
    ADDRESS_FIELD,
    DATE,
    DOB_FIELD,
    MRN_FIELD,
    NAME_FIELD,
    header_identifiers,
)
from cass_pipeline.domain.privacy import identifiers_found, tokens
from cass_pipeline.domain.reports import lexicon as lx

STREET = re.compile(
    r"\b\d{1,5}[ \t]+(?:[A-Z][a-z]+[ \t]+){1,3}(?:Street|St|Road|Rd|Avenue|Ave|"
    r"Lane|Ln|Drive|Boulevard|Blvd|Way|Court|Ct|Place|Pl)\b\.?"
)
PHONE_FIELD = re.compile(
    r"(?im)\b(?:phone|tel|telephone|mobile|fax)\.?[ \t]*:?[ \t]*"
    r"(?P<value>\+?\d[\d \t().-]{5,}\d)"
)
PHONE = re.compile(
    r"(?<![\w%-])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{3,4}[\s.-]\d{3,4}"
    r"(?:[\s.-]\d{2,4})?(?![\w%-])"
)
DOCTOR = re.compile(
    r"\b(?:Dr|Doctor|Prof)\.?[ \t]+(?P<value>[A-Z][A-Za-z'-]+(?:[ \t]+[A-Z][A-Za-z'-]+)?)"
)
#: The clinical phrases a name's word is left in ("Left main" for Ms Main, "RCA: normal").
CLINICAL_PHRASES = (
    lx.VESSEL_REGEX,
    lx.GRADE_REGEX,
    lx.NORMAL_REGEX,
    lx.NOUN_REGEX,
    lx.OCCLUSION_REGEX,
    lx.IRREGULARITY_REGEX,
    re.compile(r"\bnon-?[a-z]+", re.I),  # "non-atherosclerotic"
)
LONG_DIGITS = re.compile(r"(?<![\w.])\d{7,}(?![\w%])")


@dataclass
class Deidentified:
    """Scrubbed text, how many of each tag were placed, and the identifiers found."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)
    identifiers: list[str] = field(default_factory=list)


def deidentify(raw: str) -> Deidentified:
    """Replace names, dates, MRNs, accession numbers, phone numbers and addresses."""
    counts: dict[str, int] = {}
    identifiers = header_identifiers(raw)

    def sub(pattern: re.Pattern, tag: str, text: str, group: str | None = None) -> str:
        def replace(match: re.Match) -> str:
            counts[tag] = counts.get(tag, 0) + 1
            if group is None:
                return f"[{tag}]"
            start, end = match.span(group)
            whole = match.group(0)
            offset = match.start()
            return whole[: start - offset] + f"[{tag}]" + whole[end - offset :]

        return pattern.sub(replace, text)

    text = sub(NAME_FIELD, "NAME", raw, "value")
    text = sub(DOB_FIELD, "DOB", text, "value")
    text = sub(MRN_FIELD, "MRN", text, "value")
    text = sub(ACCESSION_FIELD, "ACCESSION", text, "value")
    text = sub(ADDRESS_FIELD, "ADDRESS", text, "value")
    text = sub(PHONE_FIELD, "PHONE", text, "value")
    text = sub(STREET, "ADDRESS", text)
    text = sub(DOCTOR, "NAME", text, "value")
    for value in identifiers:
        text = scrub_outside_clinical_phrases(text, value, counts)
    text = sub(DATE, "DATE", text)
    text = sub(PHONE, "PHONE", text)
    text = sub(LONG_DIGITS, "ID", text)
    return Deidentified(text=text, counts=counts, identifiers=identifiers)


def written_as_name(text: str, value: str) -> list[tuple[int, int]]:
    """Where an identifier's value occurs in `text` (any case, as a whole word) but where it
    is not written as a name inside a clinical phrase (a vessel, grade, normal or lesion
    word): part of a longer phrase ("Left main" for Ms Main), in lower case ("RCA:
    normal"), or in capitals where the name is not ("LAD" for Mr Lad)."""
    clinical = [m.span() for pattern in CLINICAL_PHRASES for m in pattern.finditer(text)]

    def clinical_use(start: int, end: int) -> bool:
        written = text[start:end]
        return any(
            a <= start
            and end <= b
            and (
                b - a > end - start
                or written.islower()
                or (written.isupper() and not value.isupper())
            )
            for a, b in clinical
        )

    return [
        m.span()
        for m in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.I)
        if not clinical_use(*m.span())
    ]


def scrub_outside_clinical_phrases(text: str, value: str, counts: dict[str, int]) -> str:
    """`text` with the value tagged [NAME] wherever it is `written_as_name`."""
    pieces, last = [], 0
    for start, end in written_as_name(text, value):
        pieces += [text[last:start], "[NAME]"]
        last = end
        counts["NAME"] = counts.get("NAME", 0) + 1
    return "".join(pieces) + text[last:]


def identifiers_in_reports(values: Iterable[str], identifiers: Iterable[str]) -> set[str]:
    """The identifiers that report outputs hold (`identifiers_found`), but for a one-word
    identifier never `written_as_name` there ("main" in "Left main" for Ms Main)."""
    values, identifiers = list(values), list(identifiers)
    originals: dict[str, list[str]] = {}
    for identifier in identifiers:
        originals.setdefault(" ".join(tokens(identifier)), []).append(identifier)
    return {
        hit
        for hit in identifiers_found(values, identifiers)
        if " " in hit
        or any(written_as_name(v, o) for v in values for o in originals.get(hit, [hit]))
    }

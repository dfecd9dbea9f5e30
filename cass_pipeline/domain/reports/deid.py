"""De-identification of report text (pseudonyms for patient keys live in `privacy.py`).

Rules, applied in order, each replacing the match by a bracketed tag:
1. header fields: patient name, date of birth, MRN / patient id, accession number, address
   and phone lines; the values found are also scrubbed wherever else they occur;
2. doctors' names after "Dr";
3. every date (numeric or with a month name), phone number and digit run of 7 or more.
"""

from __future__ import annotations

import re
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
    r"\b(?:Dr|Doctor|Prof)\.?\s+(?P<value>[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?)"
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
        text = sub(re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.I), "NAME", text)
    text = sub(DATE, "DATE", text)
    text = sub(PHONE, "PHONE", text)
    text = sub(LONG_DIGITS, "ID", text)
    return Deidentified(text=text, counts=counts, identifiers=identifiers)

"""Reports as a raw folder holds them: text files whose header states the MRN, accession and
exam date, or the rows of RIS exports with configurable column names."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cass_pipeline.domain.options import option
from cass_pipeline.layout import PARQUET, REPORTS

if TYPE_CHECKING:  # pandas reads RIS tables only; one report's text does not need it
    import pandas as pd

#: Header fields a report states: its links to a study (de-identification scrubs them too).
DATE_NUMERIC = r"\b(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))\b"
MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
DATE_WORDS = (
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{MONTHS}\.?,?\s+\d{{4}}|"
    rf"{MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b"
)
DATE = re.compile(f"{DATE_NUMERIC}|{DATE_WORDS}", re.I)
MRN_FIELD = re.compile(
    r"(?i)\b(?:MRN|medical\s+record\s+(?:number|no\.?)|patient\s+id|PID|"
    r"hospital\s+(?:number|no\.?)|NHS\s+(?:number|no\.?))\s*[:#]?\s*"
    r"(?P<value>[A-Z0-9][A-Z0-9-]{3,})"
)
ACCESSION_FIELD = re.compile(
    r"(?i)\b(?:accession(?:\s+(?:number|no\.?))?|acc\.?\s*(?:no\.?|#))"
    r"\s*[:#]?\s*(?P<value>[A-Z0-9][A-Z0-9-]{3,})"
)
FIELD_END = r"(?=\s{2,}|\t|\s+(?:DOB|D\.O\.B|MRN|Sex|Age|Accession|Exam|Date)\b|$)"
NAME_FIELD = re.compile(
    rf"(?im)\b(?:patient(?:'s)?\s+name|patient|name)\s*:\s*(?P<value>[^\n:]+?){FIELD_END}"
)
DOB_FIELD = re.compile(
    r"(?i)\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|born)\s*[:#]?\s*"
    rf"(?P<value>{DATE_NUMERIC}|{DATE_WORDS})"
)
ADDRESS_FIELD = re.compile(r"(?im)\b(?:address|addr\.?)\s*:\s*(?P<value>[^\n]+)$")


TEXT_SUFFIXES = {".txt", ".text", ".rpt"}
TABLE_SUFFIXES = {".csv", ".tsv", ".xlsx", PARQUET}


@dataclass(frozen=True)
class IndexReject:
    """A file, study or report that ingestion will not use, and why."""

    key: str | None
    path: Path
    reason: str
    kind: str = "image"


@dataclass(frozen=True)
class ReportColumns:
    """Column names of a RIS export, and how far an exam date may be from a study date."""

    mrn: str = option("MRN", "column of the patient's MRN")
    accession: str = option("Accession", "column of the accession number")
    exam_date: str = option("ExamDate", "column of the exam date")
    text: str = option("ReportText", "column of the report text")
    date_window_days: int = option(
        7, "days an exam date may lie from a study date when linked by MRN", min=0
    )


@dataclass(frozen=True)
class ReportSource:
    """One report: a text file, or a row of a RIS export."""

    origin: str
    path: Path
    row: int | None
    mrn: str | None
    accession: str | None
    exam_date: str | None
    text: str | None = None

    def data(self) -> bytes:
        return self.path.read_bytes() if self.text is None else self.text.encode("utf-8")

    @property
    def stem(self) -> str:
        return self.path.stem


def text_report(path: Path) -> ReportSource:
    """A report file with the MRN, accession and exam date its header states."""
    try:
        head = path.read_bytes()[:4000].decode("utf-8", errors="replace")
    except OSError:
        head = ""
    mrn = MRN_FIELD.search(head)
    accession = ACCESSION_FIELD.search(head)
    exam = None
    for line in head.splitlines():
        found = DATE.search(line) if "exam" in line.lower() else None
        if found:
            exam = found.group(0)
            break
    return ReportSource(
        origin=f"{REPORTS}/{path.name}",
        path=path,
        row=None,
        mrn=mrn.group("value") if mrn else None,
        accession=accession.group("value") if accession else None,
        exam_date=exam,
    )


def read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == PARQUET:
        return pd.read_parquet(path)
    if suffix == ".xlsx":
        return pd.read_excel(path, dtype=str)
    return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)


def table_reports(
    path: Path, columns: ReportColumns
) -> tuple[list[ReportSource], list[IndexReject]]:
    """One report per row of a RIS export; a table without the text column is rejected."""
    try:
        frame = read_table(path)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return [], [IndexReject(None, path, f"unreadable report table: {reason}", "report")]
    missing = [c for c in (columns.text, columns.mrn) if c not in frame.columns]
    if missing:
        return [], [
            IndexReject(
                None,
                path,
                f"report table without column(s) {', '.join(missing)} "
                f"(columns: {', '.join(map(str, frame.columns))})",
                "report",
            )
        ]

    import pandas as pd

    def cell(row, name):
        value = row.get(name) if name in frame.columns else None
        return None if value is None or pd.isna(value) else str(value).strip() or None

    reports = [
        ReportSource(
            origin=f"{REPORTS}/{path.name}#row {i + 1}",
            path=path,
            row=i,
            mrn=cell(row, columns.mrn),
            accession=cell(row, columns.accession),
            exam_date=cell(row, columns.exam_date),
            text=cell(row, columns.text) or "",
        )
        for i, row in enumerate(frame.to_dict("records"))
    ]
    return reports, []


def report_sources(
    folder: Path, columns: ReportColumns
) -> tuple[list[ReportSource], list[IndexReject]]:
    """Reports under `folder`: text files and the rows of RIS exports."""
    reports, rejects = [], []
    if not folder.is_dir():
        return reports, rejects
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        suffix = path.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            reports.append(text_report(path))
        elif suffix in TABLE_SUFFIXES:
            found, failed = table_reports(path, columns)
            reports += found
            rejects += failed
    return reports, rejects


def header_identifiers(raw: str) -> list[str]:
    """Identifier values stated in the report's fields (names split into their capitalised
    parts)."""
    found: list[str] = []
    for match in NAME_FIELD.finditer(raw):
        value = match.group("value").strip()
        if value.startswith("["):
            continue
        found.append(value)
        # a part alone only when written as a name: "disease" after "Patient:" in a sentence
        # is scrubbed there, but not in every clinical phrase that uses the word
        found += [p for p in re.split(r"[\s,^]+", value) if len(p) >= 2 and p[0].isupper()]
    for pattern in (DOB_FIELD, MRN_FIELD, ACCESSION_FIELD, ADDRESS_FIELD):
        found += [m.group("value").strip() for m in pattern.finditer(raw)]
    return sorted({v for v in found if v}, key=len, reverse=True)


def decode_report(data: bytes) -> str:
    """Text of a report file: UTF-8 (BOM allowed) or BOM-marked UTF-16; else UnicodeError."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def report_identifiers(report: ReportSource) -> set[str]:
    """The identifiers a report states (header fields, the RIS row's MRN and accession)."""
    found = {v for v in (report.mrn, report.accession) if v}
    try:
        return found | set(header_identifiers(decode_report(report.data())))
    except (UnicodeError, OSError):
        return found

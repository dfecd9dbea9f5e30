"""Read, de-identify and parse a folder of reports on all cores, with rejects and reasons."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

from cass_pipeline.domain.cohort.report_sources import decode_report
from cass_pipeline.domain.reports.config import ReportSettings
from cass_pipeline.domain.reports.deid import deidentify
from cass_pipeline.domain.reports.flags import report_flags
from cass_pipeline.domain.reports.labels import READER, ReportLabels, label_report
from cass_pipeline.domain.reports.parser import build_nlp, read_report
from cass_pipeline.domain.reports.review import Override, apply_overrides, read_overrides

if TYPE_CHECKING:  # one report (`cass parse-report`) needs neither the index nor pandas
    from cass_pipeline.domain.cohort.index import CohortIndex

CHUNK = 64
#: Below this many reports one process is faster than starting workers.
PARALLEL_FROM = 200


@dataclass
class ParsedReport:
    """One de-identified report and its labels (no identifier survives in here)."""

    patient_id: str | None
    text: str
    text_sha256: str
    redactions: dict[str, int]
    labels: ReportLabels


@dataclass
class Reject:
    """An input that could not be used, and why."""

    patient_id: str | None
    stage: str
    reason: str


@dataclass
class ParsedCohort:
    reports: list[ParsedReport] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: Patients without a report whose labels readers gave (`review/cohort.py`), by pseudonym.
    labelled_by_readers: dict[str, ReportLabels] = field(default_factory=dict)


@lru_cache(maxsize=4)
def cached_nlp(site_files: tuple[str, ...] = ()):
    return build_nlp(site_files)


def labelled_and_flagged(doc, bare_50_significant: bool) -> ReportLabels:
    """The labels of one parsed report, with their flags."""
    labels = label_report(read_report(doc), bare_50_significant)
    labels.flags = report_flags(labels, bare_50_significant)
    return labels


def labels_or_failure(nlp, text: str, bare_50_significant: bool) -> ReportLabels | str:
    """The labels of one de-identified report, or, where the parser fails on it, the reason
    its reject gives: a parser bug stops no cohort."""
    try:
        return labelled_and_flagged(nlp(text), bare_50_significant)
    except Exception as error:  # any parser bug: this report is a reject, the run goes on
        return PARSER_FAILED.format(type(error).__name__)


def parse_chunk(
    items: list[tuple[str, str]], bare_50_significant: bool, site_files: tuple[str, ...] = ()
) -> list[tuple]:
    """(patient id, de-identified text, redactions, labels or the reason the parser failed)
    for each (patient id, raw text), read with the built-in vocabulary and the site's
    files."""
    nlp = cached_nlp(site_files)
    cleaned = [(pid, deidentify(raw)) for pid, raw in items]
    return [
        (pid, d.text, d.counts, labels_or_failure(nlp, d.text, bare_50_significant))
        for pid, d in cleaned
    ]


def parse_report_text(
    raw: str,
    bare_50_significant: bool = ReportSettings.bare_50_significant,
    site_files: tuple[str, ...] = (),
) -> tuple[str, ReportLabels]:
    """De-identified text and labels of one report (the CLI's path; ValueError where the
    parser fails on it)."""
    [(_, text, _, labels)] = parse_chunk([("", raw)], bare_50_significant, site_files)
    if isinstance(labels, str):
        raise ValueError(labels)
    return text, labels


def iter_parsed(
    items: list[tuple[str, str]],
    workers: int,
    bare_50_significant: bool,
    site_files: tuple[str, ...] = (),
) -> Iterator[tuple]:
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    parse = partial(parse_chunk, bare_50_significant=bare_50_significant, site_files=site_files)
    if workers <= 1 or len(items) < PARALLEL_FROM:
        for chunk in chunks:
            yield from parse(chunk)
        return
    # fork: workers start with spaCy and the pipeline already loaded (spawn costs ~3 s each)
    cached_nlp(site_files)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for result in pool.map(parse, chunks):
            yield from result


EMPTY_REPORT, NO_FINDINGS = "empty report", "no vessel findings"
PARSER_FAILED = (
    "the parser failed on this report ({}): a bug of CASS; send the report, with its "
    "identifiers removed by hand, to its maintainers"
)
UNLINKED = "no study with its accession number, or of its MRN near its exam date"
IMAGES_WITHOUT_REPORT = "images without a linked report"
NOT_REVIEWABLE = "a reviewer's override names no parsed report of this pseudonym"
ALREADY_REPORTED = "a reader's verdict on a patient with a report: the report's labels stand"


def refused_without_findings(labels: ReportLabels) -> bool:
    """A report refused as "no vessel findings": it says nothing about a vessel, and no flag
    holds it for a person (vessel words or percentages it could not read do)."""
    return not has_findings(labels) and not any(flag.holds for flag in labels.flags)


def has_findings(labels: ReportLabels) -> bool:
    """Whether a parsed report says anything about a vessel."""
    return labels.patient_class is not None or any(
        lab.stenosis_class is not None or lab.non_diagnostic for lab in labels.branches.values()
    )


def add_reader_labels(cohort: ParsedCohort, labelled: dict[str, ReportLabels]) -> None:
    """The patients readers labelled join the cohort; one it reports on keeps its report's
    labels (a reject says so)."""
    reported = {report.patient_id for report in cohort.reports}
    for pid, labels in sorted(labelled.items()):
        if pid in reported:
            cohort.rejects.append(Reject(pid, READER, ALREADY_REPORTED))
        else:
            cohort.labelled_by_readers[pid] = labels


def parse_cohort_reports(
    index: CohortIndex,
    pseudonyms: Callable[[str], str],
    workers: int | None = None,
    bare_50_significant: bool = ReportSettings.bare_50_significant,
    reviews: Path | None = None,
    site_files: tuple[str, ...] = (),
) -> ParsedCohort:
    """Every report of the cohort, under its patient's pseudonym, parsed (with the site's
    vocabulary files besides the built-in one), with the overrides of a reviewer (files
    under `reviews`) applied; unlinked, unreadable, empty and duplicate reports, reports
    without vessel findings (unless they hold vessel words or percentages: those wait for
    review), images without a report and bad or unmatched overrides become rejects with a
    reason."""
    cohort = ParsedCohort()
    overrides, problems = read_overrides(reviews) if reviews else ([], [])
    cohort.rejects += [Reject(None, "review", problem) for problem in problems]
    for patient in index.patients.values():
        if patient.report is None:
            cohort.rejects.append(Reject(pseudonyms(patient.key), "link", IMAGES_WITHOUT_REPORT))
    for report in index.unlinked_reports:
        cohort.rejects.append(Reject(pseudonyms(report.mrn or report.stem), "link", UNLINKED))
    for item in (r for r in index.rejects if r.kind == "report"):
        pid = pseudonyms(item.key) if item.key else None
        cohort.rejects.append(Reject(pid, "read", item.reason))
    items = []
    seen: dict[str, str] = {}
    for patient in (p for p in index.patients.values() if p.report is not None):
        pid = pseudonyms(patient.key)
        try:
            raw = decode_report(patient.report.data())
        except (UnicodeDecodeError, UnicodeError) as error:
            cohort.rejects.append(
                Reject(pid, "read", f"unreadable encoding: {error.reason} at byte {error.start}")
            )
            continue
        except OSError as error:
            cohort.rejects.append(Reject(pid, "read", f"unreadable file: {error.strerror}"))
            continue
        if not raw.strip():
            cohort.rejects.append(Reject(pid, "read", EMPTY_REPORT))
            continue
        digest = hashlib.sha256(" ".join(raw.split()).encode("utf-8")).hexdigest()
        if digest in seen:
            cohort.rejects.append(Reject(pid, "read", f"duplicate of the report of {seen[digest]}"))
            continue
        seen[digest] = pid
        items.append((pid, raw))

    workers = workers or os.cpu_count() or 1
    reviews: dict[str, list[Override]] = {}
    for row in overrides:
        reviews.setdefault(row.patient_id, []).append(row)
    for pid, text, counts, labels in iter_parsed(items, workers, bare_50_significant, site_files):
        if isinstance(labels, str):
            cohort.rejects.append(Reject(pid, "parse", labels))
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if pid in reviews:
            labels = apply_overrides(labels, reviews.pop(pid))
        if refused_without_findings(labels):
            cohort.rejects.append(Reject(pid, "parse", NO_FINDINGS))
            continue
        cohort.reports.append(ParsedReport(pid, text, digest, counts, labels))
    for pid in reviews:
        cohort.rejects.append(Reject(pid, "review", NOT_REVIEWABLE))
    return cohort

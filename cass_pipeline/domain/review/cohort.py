"""Readers' verdicts as training labels, a setting that is off by default.

With it on, the patients a reader corrected (`corrected`), or every patient a reader judged
(`judged`), join the next training cohort: their judged inbox study is ingested like any
export, their branches labelled as the reader read them (`source` 'reader' in
`branch_labels`), and the splits keep them apart: always training, never validation or
test, so the figures stay those of report-labelled patients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from cass_pipeline.domain.anatomy import CATEGORIES, STENOSIS_CLASSES
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.imaging.views import PatientSource, reject
from cass_pipeline.domain.prediction.inbox import InboxStudy
from cass_pipeline.domain.reports.labels import READER, BranchLabel, ReportLabels
from cass_pipeline.domain.reports.parser import ReportReading
from cass_pipeline.domain.review.store import Verdict

#: Which verdicts become labels: none, those that corrected CASS, every one.
MODES = ("off", "corrected", "judged")
READER_LABEL_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("study", pa.string()),
        ("branch", pa.string()),
        ("stenosis_class", pa.string()),
        ("readers", pa.int32()),
        ("corrected", pa.bool_()),
        ("cad_rads", pa.string()),
    ]
)
LEFT_OUT_SCHEMA = pa.schema([("patient_id", pa.string()), ("reason", pa.string())])
RULE_READER = "a reader's verdict on CASS's answer"
READERS_DIFFER = "its readers read it differently: an admin's verdict settles it"
NO_STUDY = "the verdict names no inbox study (given before studies were recorded)"
NOT_DIAGNOSTIC = "read as non-diagnostic (CAD-RADS N): no class to train on"


def class_of_category(category: str) -> str:
    """The patient class a CAD-RADS category reads as (0; 1-2; 3 and above)."""
    index = CATEGORIES.index(category)
    return STENOSIS_CLASSES[min(index, 1) if index < 3 else 2]


def newest_readings(verdicts: Iterable[Verdict]) -> dict[str, list[Verdict]]:
    """Each patient's newest verdict of each reader."""
    newest: dict[tuple[str, str], Verdict] = {}
    for verdict in verdicts:
        newest[(verdict.patient_id, verdict.user)] = verdict
    by_patient: dict[str, list[Verdict]] = {}
    for (patient, _), verdict in sorted(newest.items()):
        by_patient.setdefault(patient, []).append(verdict)
    return by_patient


def verdict_labels(
    verdicts: Iterable[Verdict], mode: str, admins: frozenset[str] = frozenset()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The branch classes readers gave (`READER_LABEL_SCHEMA`), and the judged patients left
    out with the reason (`LEFT_OUT_SCHEMA`). A patient whose readers read it differently
    takes an admin's verdict where one was given, else is left out; one whose category
    disagrees with its branch classes is left out too."""
    if mode not in MODES:
        raise ValueError(f"unknown reader label mode {mode!r}: one of {', '.join(MODES)}")
    rows, left_out = [], []
    for patient, readings in ({} if mode == "off" else newest_readings(verdicts)).items():
        if mode == "corrected" and all(v.agree for v in readings):
            continue
        settled = [v for v in readings if v.user in admins] or readings
        if len({(v.study, tuple(sorted(v.branches.items())), v.cad_rads) for v in settled}) > 1:
            left_out.append({"patient_id": patient, "reason": READERS_DIFFER})
            continue
        verdict = settled[-1]
        if problem := verdict_problem(verdict):
            left_out.append({"patient_id": patient, "reason": problem})
            continue
        rows += [
            {
                "patient_id": patient,
                "study": verdict.study,
                "branch": branch,
                "stenosis_class": stenosis_class,
                "readers": len(readings),
                "corrected": not verdict.agree,
                "cad_rads": verdict.cad_rads or verdict.cass_cad_rads,
            }
            for branch, stenosis_class in sorted(verdict.branches.items())
        ]
    return (
        pd.DataFrame(rows, columns=READER_LABEL_SCHEMA.names),
        pd.DataFrame(left_out, columns=LEFT_OUT_SCHEMA.names),
    )


def verdict_problem(verdict: Verdict) -> str | None:
    """Why a verdict cannot label its patient (None when it can)."""
    if not verdict.study:
        return NO_STUDY
    if not verdict.branches or any(c not in STENOSIS_CLASSES for c in verdict.branches.values()):
        return "no class for every branch CASS scored"
    category = verdict.cad_rads if not verdict.agree else verdict.cass_cad_rads
    if category == "N":
        return NOT_DIAGNOSTIC
    worst = max(verdict.branches.values(), key=STENOSIS_CLASSES.index)
    if category in CATEGORIES and class_of_category(category) != worst:
        return (
            f"CAD-RADS {category} read, but the branch classes read make the patient {worst}: "
            "the reader corrects the branches too"
        )
    return None


def reader_report_labels(table: pd.DataFrame) -> dict[str, ReportLabels]:
    """Each reader-labelled patient's labels as a report's would be (source 'reader'): a
    class per branch without a percent (every grade of the class is allowed), the reader's
    CAD-RADS category."""
    labelled = {}
    for patient, rows in table.groupby("patient_id", sort=True):
        branches = {
            row.branch: BranchLabel(
                row.branch, row.stenosis_class, None, None, rule=RULE_READER, source=READER
            )
            for row in rows.itertuples()
        }
        worst = max(rows.stenosis_class, key=STENOSIS_CLASSES.index)
        labelled[patient] = ReportLabels(
            branches, worst, rows.cad_rads.iloc[0], [], ReportReading()
        )
    return labelled


@dataclass(frozen=True)
class ReaderStudies:
    """The judged inbox studies the image stage ingests, and image rejects for those it
    cannot (`IMAGE_REJECT_SCHEMA` rows, named by keyed study id)."""

    sources: tuple[PatientSource, ...] = ()
    not_ingested: tuple[dict, ...] = ()


def reader_studies(
    table: pd.DataFrame, studies: Iterable[InboxStudy], in_cohort: Callable[[Path], bool]
) -> ReaderStudies:
    """The judged study of each patient in `table` (`READER_LABEL_SCHEMA`) among the inbox's
    `studies`: gone from the inbox, or of a patient the cohort holds already, it is a reject."""
    wanted = dict(table.drop_duplicates("patient_id")[["patient_id", "study"]].itertuples(False))
    found = {(s.patient, s.study): s for s in studies}
    sources, rejects = [], []
    for patient, study in sorted(wanted.items()):
        match = found.get((patient, study))
        problem = (
            "the study a reader judged is no longer in the inbox"
            if match is None
            else "judged in the reading room, but already in the cohort with its report"
            if in_cohort(match.folder)
            else None
        )
        if problem:
            rejects.append(reject(patient, f"inbox study {study}", None, None, problem))
            continue
        key = folder_patient_key(match.folder)
        sources.append(PatientSource(key, match.folder, identifiers=frozenset({match.folder.name})))
    return ReaderStudies(tuple(sources), tuple(rejects))


NO_READER_STUDIES = ReaderStudies()

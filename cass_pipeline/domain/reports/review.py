"""A reviewer's overrides of report labels, read from `raw/reviews/` and applied on the next run.

A file (CSV with a header, or YAML: a list of mappings) holds rows of `patient_id` (the
pseudonym that `label_review` shows), `branch`, `label` and an optional `note`. The label is
a class (`significant`, `non_significant`, `no_stenosis`), a percent or range ("70%",
"50-69%"), or `none` (the branch gets no label). A row with the label `accept` and no branch
says the parsed labels are right. Either way the report is reviewed: it leaves the queue.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from cass_pipeline.domain.anatomy import BRANCHES, STENOSIS_CLASSES, class_of_percent
from cass_pipeline.domain.reports.labels import BranchLabel, ReportLabels, summarise
from cass_pipeline.domain.storage import read_yaml

COLUMNS = ("patient_id", "branch", "label", "note")
ACCEPT = "accept"
NO_LABEL = {"none", "no label", "exclude"}
#: Percent ranges a reviewer writes for a class alone (the lowest grade of the class).
CLASS_RANGES = {"no_stenosis": (0, 0), "non_significant": (1, 24), "significant": (50, 69)}
PERCENT = re.compile(r"^\s*(\d{1,3})\s*%?\s*(?:-\s*(\d{1,3})\s*%?)?\s*$")
RULE_REVIEW = "a reviewer's override"


@dataclass(frozen=True)
class Override:
    """One reviewer's row: a branch's new label, or (branch None) the report accepted."""

    patient_id: str
    branch: str | None
    stenosis_class: str | None
    pct_low: int | None
    pct_high: int | None
    note: str | None


def parse_label(text: str) -> tuple[str | None, int | None, int | None]:
    """(class, pct low, pct high) of a reviewer's label; ValueError when it is none of them."""
    key = text.strip().lower().replace("-", "_").replace(" ", "_")
    if text.strip().lower() in NO_LABEL:
        return None, None, None
    if key in STENOSIS_CLASSES:
        return (key, *CLASS_RANGES[key])
    m = PERCENT.match(text)
    if m is None:
        raise ValueError(
            f"unknown label {text!r}: write a class ({', '.join(STENOSIS_CLASSES)}), "
            "a percent or range (70%, 50-69%), none, or accept"
        )
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    if not 0 <= low <= high <= 100:
        raise ValueError(f"percent range {text!r} is not within 0-100")
    return class_of_percent(low), low, high


def override_of(row: dict, where: str) -> Override:
    """One row as an override; ValueError with the place and what to fix."""
    patient = str(row.get("patient_id") or "").strip()
    branch = str(row.get("branch") or "").strip() or None
    label = str(row.get("label") or "").strip()
    note = str(row.get("note") or "").strip() or None
    if not patient:
        raise ValueError(f"{where}: no patient_id")
    if label.lower() == ACCEPT:
        if branch is not None:
            raise ValueError(f"{where}: 'accept' is for a whole report; leave branch empty")
        return Override(patient, None, None, None, None, note)
    if branch not in BRANCHES:
        raise ValueError(f"{where}: unknown branch {branch!r} (one of {', '.join(BRANCHES)})")
    try:
        stenosis_class, low, high = parse_label(label)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return Override(patient, branch, stenosis_class, low, high, note)


def read_overrides(folder: Path) -> tuple[list[Override], list[str]]:
    """Every override under `folder` (CSV and YAML files), and a reason for each bad row or
    unreadable file."""
    overrides, problems = [], []
    if not folder.is_dir():
        return overrides, problems
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = f"{folder.name}/{path.name}"
        try:
            if path.suffix.lower() == ".csv":
                with path.open(newline="", encoding="utf-8-sig") as handle:
                    rows = list(csv.DictReader(handle))
                start = 2
            elif path.suffix.lower() in {".yaml", ".yml"}:
                rows = read_yaml(path) or []
                start = 1
            else:
                problems.append(f"{name}: not a CSV or YAML file of overrides")
                continue
        except (OSError, UnicodeError, ValueError, yaml.YAMLError, csv.Error) as error:
            problems.append(f"{name}: unreadable ({type(error).__name__})")
            continue
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            problems.append(f"{name}: expected rows with the columns {', '.join(COLUMNS)}")
            continue
        for number, row in enumerate(rows, start):
            try:
                overrides.append(override_of(row, f"{name} row {number}"))
            except ValueError as error:
                problems.append(str(error))
    return overrides, problems


def apply_overrides(labels: ReportLabels, overrides: list[Override]) -> ReportLabels:
    """The report's labels with the reviewer's branch labels in place (`source: review`), the
    patient class and CAD-RADS derived again; the report is reviewed."""
    branches = dict(labels.branches)
    for row in overrides:
        if row.branch is None:
            continue
        parsed = branches.get(row.branch)
        branches[row.branch] = BranchLabel(
            row.branch,
            row.stenosis_class,
            row.pct_low,
            row.pct_high,
            modifiers=parsed.modifiers if parsed else [],
            rule=RULE_REVIEW,
            source="review",
            note=row.note,
        )
    reviewed = summarise(branches, labels.reading)
    return replace(reviewed, flags=labels.flags, reviewed=True)

"""A generated cohort re-written as a hospital hands it over: a flat PACS dump and a RIS export.

Every DICOM file goes to `mpr/` under a random name without extension, all patients and
series mixed in one folder (only the DICOM tags say what is what); the reports become one
CSV (`reports/ris_export.csv`) with the columns MRN, Accession, ExamDate and ReportText, rows
shuffled. The dump is not the generator's own layout, so the pipeline treats it as a real
export (secret pseudonym key).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cass_pipeline.domain.cohort.report_sources import ReportColumns, text_report
from cass_pipeline.domain.storage import atomic_path, write_text_atomic
from cass_pipeline.layout import RawLayout

RIS_EXPORT = "ris_export.csv"
PACS_GENERATOR = "cass synth (PACS dump)"


def write_pacs_dump(cohort: Path, out: Path, seed: int) -> dict:
    """Re-write the generated cohort in `cohort` as a PACS dump and RIS export in `out`."""
    source, dump = RawLayout(cohort), RawLayout(out)
    views = sorted(source.mpr.rglob("*.dcm"))
    if not views:
        raise ValueError("a PACS dump needs a DICOM cohort (generate it with --format dicom)")
    rng = np.random.default_rng(seed)
    names: list[str] = []
    while len(names) < len(views):
        name = rng.bytes(8).hex()
        if name not in names:
            names.append(name)
    for view, name in zip(views, names, strict=True):
        with atomic_path(dump.mpr / name) as tmp:
            shutil.copyfile(view, tmp)
    columns = ReportColumns()
    rows = []
    for path in sorted(source.reports.glob("*.txt")):
        report = text_report(path)
        rows.append(
            {
                columns.mrn: report.mrn,
                columns.accession: report.accession,
                columns.exam_date: report.exam_date,
                columns.text: path.read_text(encoding="utf-8"),
            }
        )
    table = pd.DataFrame(rows).iloc[rng.permutation(len(rows))]
    with atomic_path(dump.reports / RIS_EXPORT, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    if (cohort / "ground_truth").is_dir():
        shutil.copytree(cohort / "ground_truth", out / "ground_truth", dirs_exist_ok=True)
    summary = {"generator": PACS_GENERATOR, "files": len(views), "reports": len(rows)}
    write_text_atomic(out / "cohort.json", json.dumps(summary, indent=2))
    return summary

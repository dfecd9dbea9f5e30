"""The reading room's worklist: every predicted inbox patient by pseudonym, referred first,
then by significance score, with when the study arrived and how long the answer took."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

WORKLIST_SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("received_at", pa.timestamp("s", tz="UTC")),
        ("predicted_at", pa.timestamp("s", tz="UTC")),
        ("turnaround_s", pa.float64()),
        ("cad_rads", pa.string()),
        ("patient_class", pa.string()),
        ("refer", pa.bool_()),
        ("significant_score", pa.float64()),
        ("model_version", pa.string()),
    ]
)


def timestamp(seconds: float | None):
    return None if seconds is None else datetime.fromtimestamp(round(seconds), UTC)


def worklist_table(
    predictions: Path, received: Mapping[str, float], document_name: str
) -> pd.DataFrame:
    """One row per patient folder under `predictions` holding `document_name`; `received`
    gives the time (epoch seconds) each patient's study last changed in the inbox."""
    rows = []
    for path in sorted(predictions.glob(f"*/{document_name}")):
        document = json.loads(path.read_text())
        patient = path.parent.name
        predicted = path.stat().st_mtime
        arrived = received.get(patient)
        rows.append(
            {
                "patient": patient,
                "received_at": timestamp(arrived),
                "predicted_at": timestamp(predicted),
                "turnaround_s": None if arrived is None else round(predicted - arrived, 1),
                "cad_rads": document.get("cad_rads"),
                "patient_class": document.get("patient_class"),
                "refer": document.get("refer"),
                "significant_score": document.get("significant_score"),
                "model_version": str((document.get("model") or {}).get("version", "")),
            }
        )
    table = pd.DataFrame(rows, columns=WORKLIST_SCHEMA.names)
    if table.empty:
        return table
    order = table.assign(
        referred=table.refer.fillna(False).astype(bool),
        score=table.significant_score.fillna(-1.0).astype(float),
    )
    order = order.sort_values(["referred", "score", "patient"], ascending=[False, False, True])
    return table.loc[order.index].reset_index(drop=True)

"""The reading room's worklist: every inbox study by its patient's pseudonym, referred first,
then by significance score, with when the study arrived, how long the answer took and
whether its results reached the PACS; a study CASS refused to score is listed as "not
scored" with the reason."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from cass_pipeline.domain.storage import file_digest, write_bytes_atomic

WORKLIST_SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("study", pa.string()),
        ("status", pa.string()),
        ("received_at", pa.timestamp("s", tz="UTC")),
        ("predicted_at", pa.timestamp("s", tz="UTC")),
        ("turnaround_s", pa.float64()),
        ("cad_rads", pa.string()),
        ("patient_class", pa.string()),
        ("refer", pa.bool_()),
        ("significant_score", pa.float64()),
        ("model_version", pa.string()),
        ("delivery", pa.string()),
    ]
)
#: Inbox studies the sensor did not score, by keyed names, with the reason (no identifier).
REFUSAL_SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("study", pa.string()),
        ("refused_at", pa.timestamp("s", tz="UTC")),
        ("reason", pa.string()),
    ]
)
SCORED = "scored"
#: Beside each prediction: what became of its DICOM results (pseudonymised, no identifier).
DELIVERY_FILE = "delivery.json"
#: What became of a prediction's results: not yet known (sending, or never tried), in every
#: destination, not taken by one, or not sent at all (why in the detail).
PENDING, DELIVERED, FAILED, NOT_SENT = "pending", "delivered", "failed", "not sent"
NO_DESTINATION = "no destination is set (CASS_DICOM_DESTINATIONS)"


def record_delivery(document: Path, state: str, detail: str = "") -> None:
    """What became of the DICOM results of the prediction `document` (delivered, failed,
    not sent, pending), with why or where; tied to the document's bytes, so a newer
    prediction of the patient reads as pending until its own results are sent."""
    record = {"state": state, "detail": detail, "prediction_sha256": file_digest(document)}
    write_bytes_atomic(document.parent / DELIVERY_FILE, json.dumps(record).encode("utf-8"))


def delivery_of(document: Path) -> str:
    """The worklist's delivery cell of the prediction `document`: "delivered: to X",
    "failed: why", "not sent: why" or "pending"."""
    path = document.parent / DELIVERY_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("prediction_sha256") != file_digest(document):
        return PENDING
    return f"{record['state']}: {record['detail']}" if record["detail"] else record["state"]


def refusal_rows(refused: list[tuple[str, str, str]], now: float) -> pd.DataFrame:
    """(patient, study, reason) triples as refusal rows."""
    rows = [
        {"patient": p, "study": s, "refused_at": timestamp(now), "reason": r} for p, s, r in refused
    ]
    return pd.DataFrame(rows, columns=REFUSAL_SCHEMA.names)


def merged_refusals(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The refusals table with `new` rows replacing older ones of the same study."""
    table = pd.concat([old[~old.study.isin(new.study)], new], ignore_index=True)
    return table.reset_index(drop=True)


def timestamp(seconds: float | None):
    return None if seconds is None else datetime.fromtimestamp(round(seconds), UTC)


def worklist_table(
    predictions: Path,
    received: Mapping[str, float],
    document_name: str,
    refusals: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per patient folder under `predictions` holding `document_name` (with what
    became of its DICOM results), and one per refused study not scored since; `received`
    gives the time (epoch seconds) each study last changed in the inbox, by study id."""
    rows = []
    for path in sorted(predictions.glob(f"*/{document_name}")):
        document = json.loads(path.read_text())
        patient, study = path.parent.name, document.get("study")
        predicted = path.stat().st_mtime
        arrived = received.get(study)
        scored = document.get("significant_score") is not None
        rows.append(
            {
                "patient": patient,
                "study": study,
                "status": SCORED if scored else f"not scored: {document.get('note')}",
                "received_at": timestamp(arrived),
                "predicted_at": timestamp(predicted),
                "turnaround_s": None if arrived is None else round(predicted - arrived, 1),
                "cad_rads": document.get("cad_rads"),
                "patient_class": document.get("patient_class"),
                "refer": document.get("refer"),
                "significant_score": document.get("significant_score"),
                "model_version": str((document.get("model") or {}).get("version", "")),
                "delivery": delivery_of(path),
            }
        )
    scored = {row["study"] for row in rows}
    for refusal in [] if refusals is None else refusals.to_dict("records"):
        if refusal["study"] not in scored:
            rows.append(
                {
                    "patient": refusal["patient"],
                    "study": refusal["study"],
                    "status": f"not scored: {refusal['reason']}",
                    "received_at": timestamp(received.get(refusal["study"])),
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

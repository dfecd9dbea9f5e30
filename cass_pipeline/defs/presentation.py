"""Helpers that turn tables and pictures into Dagster metadata."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cass_pipeline.domain.cohort.raw_layout import too_few_patients


def schema_metadata(schema: pa.Schema) -> dg.MetadataValue:
    """A Parquet schema as a Dagster table schema (shown on the asset page)."""
    return dg.MetadataValue.table_schema(
        dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])
    )


#: Characters a preview cell shows before it is cut (a whole report would squeeze the table).
PREVIEW_CELL = 80


def short_cell(value, limit: int = PREVIEW_CELL):
    """A preview cell: text on one line, cut to `limit` characters with an ellipsis."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview_markdown(frame: pd.DataFrame, rows: int = 8) -> dg.MetadataValue:
    """The first `rows` rows as a markdown table, long text cut (`short_cell`)."""
    shown = frame.head(rows).map(short_cell)
    return dg.MetadataValue.md(shown.to_markdown(index=False))


def parquet_metadata(path: Path, prefix: str = "") -> dict[str, dg.MetadataValue]:
    """Row count, schema, path and a preview of a Parquet file."""
    table = pq.read_table(path)
    return {
        f"{prefix}row_count": dg.MetadataValue.int(table.num_rows),
        f"{prefix}schema": schema_metadata(table.schema),
        f"{prefix}path": dg.MetadataValue.path(str(path)),
        f"{prefix}preview": preview_markdown(table.slice(0, 8).to_pandas()),
    }


def png_markdown(png: bytes, alt: str, caption: str | None = None) -> dg.MetadataValue:
    """A PNG embedded in markdown (Dagster has no image metadata type), with a caption line
    under it when given."""
    encoded = base64.b64encode(png).decode("ascii")
    below = f"\n\n*{caption}*" if caption else ""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded}){below}")


def patients_in(path: Path) -> int:
    """Distinct patients of a Parquet table with a `patient_id` column (0 before its first
    materialisation)."""
    if not path.is_file():
        return 0
    return len(pq.read_table(path, columns=["patient_id"]).column("patient_id").unique())


def previous_patients(context: dg.AssetCheckExecutionContext, asset: str) -> int | None:
    """The patient count the latest materialisation of `asset` found before it ran."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    value = event.asset_materialization.metadata.get("previous_patients") if event else None
    return value.value if value is not None else None


def patient_count_check(
    found: int, previous: int | None, expected: str, seen: str
) -> dg.AssetCheckResult:
    """Fails (for a blocking check) when `too_few_patients`, saying what was expected where
    and what was found instead."""
    problem = too_few_patients(found, previous)
    return dg.AssetCheckResult(
        passed=problem is None,
        description=f"{problem}. Expected {expected}; found {seen}." if problem else None,
        metadata={"patients": found, "previous_patients": previous or 0},
    )


def none_as_text(value):
    """Metadata cannot hold None: 'none' in its place (0.0 stays 0.0)."""
    return "none" if value is None else value

"""Declared schemas of the image manifest and its rejects."""

from __future__ import annotations

import pyarrow as pa

MANIFEST_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("artery", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("series_name", pa.string()),
        ("source_kind", pa.string()),
        ("source_path", pa.string()),
        ("source_sha256", pa.string()),
        ("frame", pa.int32()),
        ("store_path", pa.string()),
        ("store_index", pa.int32()),
        ("source_height", pa.int32()),
        ("source_width", pa.int32()),
        ("size", pa.int32()),
        ("text_pixels", pa.int32()),
        ("masked_pixels", pa.int32()),
        ("cleanup_fingerprint", pa.string()),
    ]
)
IMAGE_REJECT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("source_path", pa.string()),
        ("series_name", pa.string()),
        ("branch", pa.string()),
        ("reason", pa.string()),
    ]
)
#: Per patient, what the OCR check read on its stored views (`ingest.stored_pixel_text`): the
#: views read, the seconds, the views (`<branch>/<view index>`) where an identifier or other
#: confident text was readable, and why it could not read (`error`). Never the text itself.
PIXEL_TEXT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("views_read", pa.int32()),
        ("seconds", pa.float32()),
        ("identifier_views", pa.list_(pa.string())),
        ("text_views", pa.list_(pa.string())),
        ("error", pa.string()),
    ]
)

"""`cass serve`: the registered model as a REST service whose answers never echo a request.

The same pyfunc `mlflow models serve` runs (`StenosisModel`: the model's `Predictor`, then
`json_ready`), behind a thin Starlette app that keeps the contract `cass predict` keeps: a
request with no usable view is a 422 with the reasons, an unknown column is refused by name,
a malformed body is a 400 that says where it broke without quoting it, and nothing from a
request (a name in a header, a base64 DICOM) reaches an error answer or the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import traceback
import uuid
from dataclasses import dataclass

import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cass_pipeline.domain.prediction.predictor import RequestColumnsError, check_request_columns
from cass_pipeline.runs.serving import json_ready
from cass_pipeline.runs.tracking import LoadedModel

LOG = logging.getLogger("cass.serve")
#: The request formats of `mlflow models serve` that CASS answers.
FORMATS = ("dataframe_split", "dataframe_records")
TEXT_COLUMNS = ("patient", "branch", "series_name", "source")


class RequestError(ValueError):
    """A request CASS cannot take, with a status and a message that quotes nothing of it."""

    def __init__(self, status: int, code: str, message: str, **details):
        super().__init__(message)
        self.status, self.code, self.details = status, code, details

    def response(self) -> JSONResponse:
        body = {"error_code": self.code, "message": str(self), **self.details}
        return JSONResponse(body, status_code=self.status)


def unquoted(reason: str) -> str:
    """A reject reason for an error answer: values it quotes (a series name, a file name,
    which come from the request) replaced by an ellipsis."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)


def parsed_body(body: bytes) -> dict:
    """The JSON object of a request, or a 400 saying where it broke (never what it held)."""
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "BAD_REQUEST", "the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise RequestError(
            400,
            "BAD_REQUEST",
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno} (character {error.pos} of {len(body)})",
        ) from None
    if not isinstance(document, dict) or sum(key in document for key in FORMATS) != 1:
        raise RequestError(
            400, "BAD_REQUEST", f"the body must be a JSON object with one of {list(FORMATS)}"
        )
    return document


def request_rows(document: dict) -> tuple[list[str], list[list]]:
    """Columns and rows of a `dataframe_split` or `dataframe_records` request."""
    if "dataframe_split" in document:
        split = document["dataframe_split"]
        columns, data = (
            (split.get("columns"), split.get("data")) if isinstance(split, dict) else (None, None)
        )
        if not isinstance(columns, list) or not isinstance(data, list):
            raise RequestError(
                400, "BAD_REQUEST", "dataframe_split needs 'columns' and 'data' lists"
            )
        if not all(isinstance(c, str) for c in columns):
            raise RequestError(400, "BAD_REQUEST", "dataframe_split 'columns' must be names")
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestError(
                    400, "BAD_REQUEST", f"row {i}: expected a list of {len(columns)} values"
                )
        return columns, data
    records = document["dataframe_records"]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(400, "BAD_REQUEST", "dataframe_records must be a list of objects")
    columns = list(dict.fromkeys(key for record in records for key in record))
    return columns, [[record.get(c) for c in columns] for record in records]


def request_frame(columns: list[str], rows: list[list]) -> pd.DataFrame:
    """The request as the predictor takes it: images decoded from base64, every value
    checked; unknown columns refused by name."""
    try:
        check_request_columns(columns)
    except RequestColumnsError as error:
        code = "UNKNOWN_COLUMNS" if error.unknown else "BAD_REQUEST"
        raise RequestError(400, code, str(error)) from None
    if not rows:
        raise RequestError(422, "NO_VIEWS", "the request holds no views")
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    images = []
    for i, value in enumerate(frame["image"]):
        try:
            images.append(base64.b64decode(value, validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(400, "BAD_REQUEST", f"row {i}: 'image' is not base64") from None
    frame["image"] = pd.Series(images, dtype=object)
    for column in TEXT_COLUMNS:
        if column in frame:
            wrong = [
                i for i, v in enumerate(frame[column]) if v is not None and not isinstance(v, str)
            ]
            if wrong:
                raise RequestError(400, "BAD_REQUEST", f"row {wrong[0]}: '{column}' must be text")
    if "view_index" in frame:
        wrong = [
            i
            for i, v in enumerate(frame.view_index)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int))
        ]
        if wrong:
            raise RequestError(
                400, "BAD_REQUEST", f"row {wrong[0]}: 'view_index' must be a whole number"
            )
    return frame


def row_of_source(frame: pd.DataFrame) -> dict[str, int]:
    """Which request row each source name of the answer stands for."""
    sources = frame["source"] if "source" in frame else pd.Series([None] * len(frame))
    return {(source if source is not None else f"row-{i}"): i for i, source in enumerate(sources)}


def refused_if_unusable(table: pd.DataFrame, frame: pd.DataFrame) -> None:
    """A 422 with every reject's row and reason when no patient of the request got a class."""
    patients = table[table.level == "patient"]
    if patients.stenosis_class.notna().any():
        return
    rows = row_of_source(frame)
    rejected = [
        {"row": rows.get(r.source), "reason": unquoted(str(r.reason))}
        for r in table[table.level == "rejected"].itertuples()
    ]
    raise RequestError(
        422,
        "NO_USABLE_VIEWS",
        f"no view of the request could be used: {len(rejected)} of {len(frame)} rows rejected",
        rejected=rejected,
    )


@dataclass
class Service:
    """The loaded model and the limits of the service."""

    model: LoadedModel
    max_bytes: int

    def answer(self, body: bytes) -> dict:
        """The prediction table of a request body, as `mlflow models serve` answers it."""
        frame = request_frame(*request_rows(parsed_body(body)))
        try:
            table = json_ready(self.model.predictor.predict_frame(frame))
        except ValueError as error:  # the predictor's own checks, which quote nothing
            raise RequestError(400, "BAD_REQUEST", str(error)) from None
        refused_if_unusable(table, frame)
        return {"predictions": table.to_dict("records")}

    async def invocations(self, request: Request) -> Response:
        started, incident = time.monotonic(), uuid.uuid4().hex[:12]
        try:
            kind = request.headers.get("content-type", "").split(";")[0].strip()
            if kind != "application/json":
                raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
            body = await self.limited_body(request)
            response = JSONResponse(await run_in_threadpool(self.answer, body))
        except RequestError as error:
            response = error.response()
        except Exception as error:  # logged by type and place only: messages may hold data
            frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
            LOG.error("incident %s: %s\n%s", incident, type(error).__name__, frames)
            response = JSONResponse(
                {
                    "error_code": "INTERNAL_ERROR",
                    "message": f"the model failed on this request (incident {incident} in "
                    "the server log)",
                },
                status_code=500,
            )
        LOG.info("POST /invocations %d in %.2f s", response.status_code, time.monotonic() - started)
        return response

    async def limited_body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it passes `max_bytes`, whether it states its
        length or comes chunked."""
        too_large = RequestError(413, "TOO_LARGE", f"the body is over {self.max_bytes} bytes")
        if int(request.headers.get("content-length") or 0) > self.max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise too_large
        return bytes(body)

    async def ping(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return JSONResponse(self.model.description())


def create_app(model: LoadedModel, max_bytes: int = 1 << 30) -> Starlette:
    """The REST app of one loaded model: POST /invocations, GET /ping, /health, /version."""
    service = Service(model, max_bytes)
    return Starlette(
        routes=[
            Route("/invocations", service.invocations, methods=["POST"]),
            Route("/ping", service.ping, methods=["GET"]),
            Route("/health", service.ping, methods=["GET"]),
            Route("/version", service.version, methods=["GET"]),
        ]
    )

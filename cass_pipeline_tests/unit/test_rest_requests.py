"""What `cass serve` takes from a request, and what its refusals say (never the request)."""

import base64
import json

import pytest

from cass_pipeline.runs.rest import RequestError, parsed_body, request_frame, request_rows, unquoted

NAME = "PLANTEDNAME^ZELDA"


def refusal(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as caught:
        request_frame(*request_rows(parsed_body(body)))
    return caught.value


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["image"], "data": [["' + NAME.encode() + b'"',
        b"{'dataframe_split': '" + NAME.encode() + b"'}",
        b"\xff" + NAME.encode(),
        json.dumps({"instances": [NAME]}).encode(),
        json.dumps({"dataframe_split": {"columns": ["image"], "data": [[NAME]]}}).encode(),
        json.dumps({"dataframe_records": [{"image": 7, "patient": NAME}]}).encode(),
    ],
)
def test_a_bad_body_is_refused_without_quoting_it(body):
    error = refusal(body)
    assert error.status == 400
    answer = error.response().body.decode()
    assert "PLANTEDNAME" not in answer and "ZELDA" not in answer


def test_records_and_split_give_the_same_frame():
    image = base64.b64encode(b"bytes").decode()
    split = {"dataframe_split": {"columns": ["image", "branch"], "data": [[image, "LAD"]]}}
    records = {"dataframe_records": [{"image": image, "branch": "LAD"}]}
    frames = [
        request_frame(*request_rows(parsed_body(json.dumps(b).encode()))) for b in (split, records)
    ]
    assert frames[0].equals(frames[1]) and frames[0].image[0] == b"bytes"


def test_unknown_columns_are_named_and_values_checked():
    image = base64.b64encode(b"x").decode()
    body = {
        "dataframe_split": {"columns": ["image", "Branch", "view_idx"], "data": [[image, 1, 2]]}
    }
    error = refusal(json.dumps(body).encode())
    assert (
        error.code == "UNKNOWN_COLUMNS" and "'Branch'" in str(error) and "'view_idx'" in str(error)
    )
    body = {"dataframe_split": {"columns": ["image", "view_index"], "data": [[image, "first"]]}}
    assert "row 0: 'view_index'" in str(refusal(json.dumps(body).encode()))
    empty = {"dataframe_split": {"columns": ["image"], "data": []}}
    assert refusal(json.dumps(empty).encode()).status == 422


def test_reasons_in_an_error_answer_lose_what_they_quote():
    assert unquoted("unknown series name 'LAD DOE'") == "unknown series name '…'"

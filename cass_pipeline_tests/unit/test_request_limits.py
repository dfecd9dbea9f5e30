"""Limits on what people send: a chunked REST body stops at --max-request-mb, a YAML file
of reviews cannot expand into gigabytes, `cass predict --out` into a folder it cannot write
is one line."""

import asyncio

import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.domain.reports.review import read_overrides
from cass_pipeline.domain.storage import read_yaml
from cass_pipeline.runs.rest import create_app


def post_chunked(app, chunks: list[bytes]) -> tuple[int, int]:
    """The status of a chunked POST /invocations, and how many chunks the app read."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    pending.append({"type": "http.request", "body": b"", "more_body": False})
    read, sent = [0], []

    async def receive():
        read[0] += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "scheme": "http",
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), read[0]


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole():
    app = create_app(model=None, max_bytes=1000)
    status, read = post_chunked(app, [b"x" * 100] * 1000)  # 100 kB, no length stated
    assert status == 413 and read <= 12


def test_a_yaml_alias_bomb_is_refused_in_a_moment(tmp_path):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
             for p, c in zip("abcdefgh", "bcdefghi", strict=True)]  # fmt: skip
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    (reviews / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    assert len((reviews / "bomb.yaml").read_bytes()) < 1000
    with pytest.raises(Exception, match="aliases are not allowed"):
        read_yaml(reviews / "bomb.yaml")
    overrides, problems = read_overrides(reviews)
    assert overrides == [] and problems == ["reviews/bomb.yaml: unreadable (ComposerError)"]


def test_predict_into_a_folder_it_cannot_write_is_one_line(tmp_path):
    (tmp_path / "patient" / "LAD").mkdir(parents=True)
    (tmp_path / "patient" / "LAD" / "1.dcm").write_bytes(b"not read")
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(
        main,
        ["predict", str(tmp_path / "patient"), "--out", str(tmp_path / "a-file" / "out")],
        env={"CASS_PSEUDONYM_KEY": "test"},
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot write into {tmp_path / 'a-file' / 'out'}: " in result.output

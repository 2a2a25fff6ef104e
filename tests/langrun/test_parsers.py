"""langrun/parsers.py: the API's JSON parser refuses what cannot be stored and read back."""

import io

import pytest
from rest_framework.exceptions import ParseError

from langrun.parsers import JSONParser


def parse(raw: bytes):
    return JSONParser().parse(io.BytesIO(raw), "application/json", {})


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "raw",
    [_nested(101), _nested(940), b'{"x": 1e999}', b"[-1E400]", b'{"a": [{"b": NaN}]}', b'{"a": "\\u0000"}', b'["\\udc00"]'],
    ids=["depth-101", "depth-940", "inf", "-inf", "nan", "nul", "surrogate"],
)
def test_unstorable_json_is_a_parse_error(raw):
    with pytest.raises(ParseError):
        parse(raw)


def test_json_at_the_depth_limit_parses(settings):
    assert settings.LANGRUN_MAX_JSON_DEPTH == 100
    value = parse(_nested(100))
    for _ in range(99):
        (value,) = value
    assert value == []
    assert parse(b'{"x": 1.5e308, "y": [1, 2, {"z": "\\u00e9"}]}') == {"x": 1.5e308, "y": [1, 2, {"z": "\u00e9"}]}


def test_the_depth_limit_is_a_setting(settings):
    settings.LANGRUN_MAX_JSON_DEPTH = 3
    assert parse(_nested(3)) == [[[]]]
    with pytest.raises(ParseError, match="3 levels"):
        parse(_nested(4))


def test_an_api_body_with_a_value_that_cannot_be_stored_is_422_in_fastapis_shape(key_client, flow):
    response = key_client.generic(
        "POST", "/api/v1/run/greet", b'{"input_value": "x", "tweaks": {"hello": {"template": 1e999}}}', content_type="application/json"
    )
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert set(error) == {"loc", "msg", "type"}


class _Unreadable(io.RawIOBase):
    def read(self, size=-1):
        raise AssertionError("the body was read")

    readinto = read


@pytest.mark.parametrize("path", ["/api/v1/flows/upload/", "/api/v1/flows/"])
def test_a_multipart_body_longer_than_the_limit_is_413_before_it_is_read(key_client, settings, path):
    settings.LANGRUN_MAX_IMPORT_BYTES = 1000
    settings.LANGRUN_MAX_BODY_BYTES = 1000
    response = key_client.generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(300 * 1024 * 1024),
        **{"wsgi.input": _Unreadable()},
    )
    assert response.status_code == 413, response.content
    assert "larger than" in response.json()["detail"]


def test_an_upload_within_the_limit_is_imported(key_client, flow, settings):
    export = key_client.get(f"/api/v1/flows/{flow.id}/export").content
    settings.LANGRUN_MAX_IMPORT_BYTES = len(export)
    response = key_client.post("/api/v1/flows/upload/", {"file": io.BytesIO(export)}, format="multipart")
    assert response.status_code == 201, response.content

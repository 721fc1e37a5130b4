"""The shared JSON body parser (``stream_app.requests``): every way a body can be bad.

Requests are built with Django's ``AsyncRequestFactory`` (real ``ASGIRequest`` objects over a
body stream), so size limits, content types and ``Content-Length`` behave as they do under an
ASGI server.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.test import AsyncRequestFactory, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.requests import (
    MAX_DEPTH,
    BodyError,
    InvalidJSON,
    bad_request,
    loads,
    read_json,
    require_json,
)

factory = AsyncRequestFactory()
JSON = "application/json"

# JSON values the parser must give back unchanged: finite floats, 64-bit integers, strings
# without lone surrogates, nested well below the depth limit.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=4)
    ),
    max_leaves=25,
)


def post(body: bytes | str, content_type: str = JSON, length: str | None = None) -> Any:
    request = factory.generic("POST", "/", data=body, content_type=content_type)
    if length is not None:
        # What the server passed on as Content-Length (a lie, here).
        request.META["CONTENT_LENGTH"] = length
    return request


def refusal(body: bytes | str, content_type: str = JSON, **kwargs: Any) -> BodyError:
    with pytest.raises(BodyError) as info:
        read_json(post(body, content_type), **kwargs)
    return info.value


# -- loads ------------------------------------------------------------------------------------


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_loads_gives_back_any_acceptable_value(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert loads(text) == value
        assert loads(text.encode()) == value


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_loads_of_any_bytes_returns_or_raises_invalid_json(data: bytes) -> None:
    with contextlib.suppress(InvalidJSON):
        loads(data)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_loads_of_any_text_returns_or_raises_invalid_json(text: str) -> None:
    try:
        value = loads(text)
    except InvalidJSON:
        return
    # Whatever it accepts can be written back out as UTF-8 (no lone surrogate got through).
    json.dumps(value, ensure_ascii=False).encode()


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_loads_depth_limit_is_exact(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    assert loads(opener * MAX_DEPTH + "1" + closer * MAX_DEPTH) is not None
    with pytest.raises(InvalidJSON, match="nested deeper"):
        loads(opener * (MAX_DEPTH + 1) + "1" + closer * (MAX_DEPTH + 1))
    with pytest.raises(InvalidJSON, match="nested deeper"):
        loads(opener * 3 + "1" + closer * 3, max_depth=2)


def test_loads_refuses_deep_nesting_without_recursing() -> None:
    # The standard library recurses once per level and raises RecursionError here.
    for text in ("[" * 1_000_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 200_000):
        with pytest.raises(InvalidJSON, match="nested deeper"):
            loads(text)


def test_loads_does_not_count_brackets_inside_strings() -> None:
    deep_looking = {"a": "[[[{{{" * 100, "b": '\\"[[[' * 50, "c": ["]]]}}}" * 40]}
    assert loads(json.dumps(deep_looking)) == deep_looking


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1.5e400"])
def test_loads_refuses_non_finite_numbers(literal: str) -> None:
    with pytest.raises(InvalidJSON, match="finite"):
        loads(f'{{"ids": [{literal}]}}')


def test_loads_keeps_tiny_floats() -> None:
    assert loads("[1e-999, 0.5]") == [0.0, 0.5]


@pytest.mark.parametrize("number", [str(2**63), str(-(2**63) - 1), "1" + "0" * 30, "9" * 5000])
def test_loads_refuses_integers_beyond_64_bits(number: str) -> None:
    with pytest.raises(InvalidJSON, match="64 bits"):
        loads(f"[{number}]")


def test_loads_keeps_64_bit_integers() -> None:
    assert loads(f"[{2**63 - 1}, {-(2**63)}]") == [2**63 - 1, -(2**63)]


@pytest.mark.parametrize(
    "text",
    [
        '"\\ud800"',
        '{"message": "hi \\udfff"}',
        '{"\\udc00": 1}',
        '["\\ud83d"]',
        '["\\ude00\\ud83d"]',
    ],
)
def test_loads_refuses_lone_surrogates(text: str) -> None:
    with pytest.raises(InvalidJSON, match="surrogate"):
        loads(text)


def test_loads_refuses_a_lone_surrogate_in_text_given_as_str() -> None:
    with pytest.raises(InvalidJSON, match="surrogate"):
        loads('"\ud800"')


def test_loads_keeps_surrogate_pairs() -> None:
    assert loads('["\\ud83d\\ude00"]') == ["\N{GRINNING FACE}"]


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe[\x001\x00]\x00",  # UTF-16 with a BOM: the standard library would accept it
        b'["\xed\xa0\x80"]',  # a surrogate encoded as UTF-8
        b'["\xc3"]',
        b"\xef\xbb\xbf[1]",  # a UTF-8 BOM
    ],
)
def test_loads_accepts_utf8_only(data: bytes) -> None:
    with pytest.raises(InvalidJSON):
        loads(data)


@pytest.mark.parametrize("data", [b"", b"   ", b"\n"])
def test_loads_refuses_an_empty_body(data: bytes) -> None:
    with pytest.raises(InvalidJSON, match="empty"):
        loads(data)


# -- read_json ----------------------------------------------------------------------------------


def test_read_json_reads_an_object() -> None:
    assert read_json(post('{"a": [1, 2.5, "x"]}'), max_bytes=100) == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=UTF-8", "APPLICATION/JSON"]
)
def test_read_json_accepts_json_content_types(content_type: str) -> None:
    assert read_json(post("[1]", content_type), max_bytes=100) == [1]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json; charset=latin-1",
        "application/octet-stream",
    ],
)
def test_read_json_refuses_other_content_types_with_415(content_type: str) -> None:
    error = refusal("[1]", content_type, max_bytes=100)
    assert (error.status, error.code) == (415, "unsupported_media_type")


def test_read_json_refuses_a_missing_content_type_with_415() -> None:
    request = factory.generic("POST", "/")
    assert "CONTENT_TYPE" not in request.META
    with pytest.raises(BodyError) as info:
        read_json(request, max_bytes=100)
    assert info.value.status == 415


def test_require_json_reads_nothing() -> None:
    request = post("not json at all", "text/plain")
    with pytest.raises(BodyError):
        require_json(request)
    assert request.body == b"not json at all"


def test_read_json_refuses_a_body_over_the_limit_with_413() -> None:
    error = refusal("[" + "1," * 60 + "1]", max_bytes=100)
    assert (error.status, error.code) == (413, "too_large")
    assert read_json(post("[" + "1," * 40 + "1]"), max_bytes=100) == [1] * 41


def test_read_json_refuses_a_declared_length_over_the_limit_without_reading() -> None:
    request = post("[1]", length="1000000")
    with pytest.raises(BodyError) as info:
        read_json(request, max_bytes=100)
    assert info.value.status == 413


def test_read_json_stops_reading_at_the_limit_when_the_length_is_understated() -> None:
    # Content-Length can be absent or understated (chunked bodies): the read is bounded anyway.
    request = post("[" + "1," * 500 + "1]", length="10")
    with pytest.raises(BodyError) as info:
        read_json(request, max_bytes=100)
    assert info.value.status == 413


@pytest.mark.parametrize("length", ["abc", "-5", "1,2"])
def test_read_json_refuses_a_malformed_content_length(length: str) -> None:
    request = post("[1]", length=length)
    with pytest.raises(BodyError) as info:
        read_json(request, max_bytes=100)
    assert (info.value.status, info.value.code) == (400, "invalid_request")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_read_json_answers_413_past_djangos_upload_limit() -> None:
    body = json.dumps({"data": "x" * 2000})
    # Django's own request.body refuses it with RequestDataTooBig (an HTML 400 page).
    with pytest.raises(RequestDataTooBig):
        _ = post(body).body
    error = refusal(body, max_bytes=10_000)
    assert (error.status, error.code) == (413, "too_large")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("[" * 100_000, "nested deeper"),
        ('{"ids": [1e999]}', "finite"),
        ('{"message": "\\ud800"}', "surrogate"),
        (b"\xff\xfe", "UTF-8"),
        ("{not json", "not JSON"),
    ],
)
def test_read_json_refuses_bad_json_with_400(body: str | bytes, fragment: str) -> None:
    error = refusal(body, max_bytes=1_000_000)
    assert (error.status, error.code) == (400, "invalid_json")
    assert fragment in error.message


def test_body_error_response_is_the_json_error_shape() -> None:
    response = refusal("{", max_bytes=100).response()
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_json"


def test_bad_request_handler_answers_json() -> None:
    response = bad_request(post("[1]"), DisallowedHost("Invalid HTTP_HOST header: 'evil'"))
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["error"] == "bad_request"
    assert "evil" not in body["message"]


def test_loads_limits_hold_for_floats_too() -> None:
    assert math.isfinite(loads("[1.7976931348623157e308]")[0])

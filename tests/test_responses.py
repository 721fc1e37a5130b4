"""SSEResponse: automatic and manual modes, errors before and after the first byte, proxying."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from stream_app.testing import EventStream
from tests.conftest import Server

pytestmark = pytest.mark.django_db(transaction=True)


def _shape(events: list) -> list[tuple[str | None, str | None, str | None]]:
    return [(e.event, e.data, e.id) for e in events]


async def test_sseresponse_iterable_serializes_each_item(server: Server) -> None:
    async with EventStream(f"{server.url}/t/sse/iterable/") as stream:
        events = await stream.read_all()
    assert [e.event for e in events] == ["item"] * 3
    assert events[0].data == "text"
    assert json.loads(events[1].data or "") == {"n": 1}
    chunk = json.loads(events[2].data or "")
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["id"] == "c1"


async def test_sseresponse_async_source_and_event_items(server: Server) -> None:
    async with EventStream(f"{server.url}/t/sse/async/") as stream:
        events = await stream.read_all()
    assert _shape(events) == [
        (None, "0", None),
        (None, "1", None),
        (None, "2", None),
        ("end", "last", "e-9"),
    ]


async def test_sseresponse_manual_callback_send_wait_close(server: Server) -> None:
    async with EventStream(f"{server.url}/t/sse/manual/") as stream:
        events = await stream.read_all()
    assert _shape(events) == [(None, "one", None), ("second", '{"two":2}', "m-2")]


async def test_sseresponse_value_based_stream(server: Server) -> None:
    async with EventStream(f"{server.url}/t/sse/value/") as stream:
        events = await stream.read_all()
    assert [e.data for e in events] == ["0", "1", "2"]


async def test_sseresponse_error_before_first_byte_is_a_500(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{server.url}/t/sse/fail-before/")
    assert response.status_code == 500
    assert not response.headers["content-type"].startswith("text/event-stream")
    assert "upstream refused" not in response.text


async def test_sseresponse_error_after_first_byte_is_an_error_event(server: Server) -> None:
    async with EventStream(f"{server.url}/t/sse/fail-after/") as stream:
        events = await stream.read_all()
    assert stream.status_code == 200
    assert events[0].data == "first"
    assert events[-1].event == "error"
    body = json.loads(events[-1].data or "")
    assert body["message"]
    assert "secret detail" not in events[-1].data


async def test_sseresponse_proxies_an_sse_upstream_event_by_event(
    server: Server, daphne_server: Server
) -> None:
    upstream = quote(f"{daphne_server.url}/t/sse/async/", safe="")
    async with EventStream(f"{server.url}/t/sse/proxy/?url={upstream}") as stream:
        events = await stream.read_all()
    assert _shape(events)[-1] == ("end", "last", "e-9")
    assert [e.data for e in events] == ["0", "1", "2", "last"]


async def test_sseresponse_proxies_other_content_as_data(
    server: Server, daphne_server: Server
) -> None:
    upstream = quote(f"{daphne_server.url}/t/state/", safe="")
    async with EventStream(f"{server.url}/t/sse/proxy/?url={upstream}") as stream:
        events = await stream.read_all()
    body = json.loads("".join(e.data or "" for e in events))
    assert "open" in body


@pytest.mark.parametrize("path", ["iterable", "async", "manual", "value", "fail-after"])
async def test_sseresponse_under_djangos_own_asgi_handler(
    server_factory: Callable[..., Server], path: str
) -> None:
    # Without stream_app.asgi Django itself iterates the response (and holds its thread).
    server = server_factory("uvicorn", {"STREAM_PLAIN_DJANGO": "1"})
    async with EventStream(f"{server.url}/t/sse/{path}/") as stream:
        events = await stream.read_all()
    assert stream.status_code == 200
    assert events
    assert events[-1].event in ("item", None, "end", "second", "error")


async def test_session_under_djangos_own_asgi_handler(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory("uvicorn", {"STREAM_PLAIN_DJANGO": "1"})
    async with EventStream(f"{server.url}/t/flood/?n=5000&max_queue=50") as stream:
        events = await stream.read_all()
    assert [int(e.data or "") for e in events] == list(range(5000))

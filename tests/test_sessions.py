"""Sessions over real sockets: daphne and uvicorn, httpx, our decoder."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest

from stream_app.testing import EventStream
from tests.conftest import Server, fetch_json

pytestmark = pytest.mark.django_db(transaction=True)


async def test_session_headers_and_retry_first(server: Server) -> None:
    async with EventStream(f"{server.url}/t/push/?n=2&retry=1500") as stream:
        response = stream.response
        assert response is not None
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = await stream.read_all()
        assert stream.decoder.retry == 1500
        first = stream.chunks[0][1]
        assert first.startswith(b"retry: 1500\n\n")
    assert [e.data for e in events] == ['{"i":0}', '{"i":1}']


async def test_session_retry_none_sends_no_retry_field(server: Server) -> None:
    async with EventStream(f"{server.url}/t/push/?n=1&retry=none") as stream:
        await stream.read_all()
    raw = b"".join(chunk for _, chunk in stream.chunks)
    assert b"retry:" not in raw


async def test_session_keep_alive_comments_during_silence(server: Server) -> None:
    async with EventStream(f"{server.url}/t/idle/?keep_alive=0.2&retry=none") as stream:
        # The opening comment, sent at once so that the headers go out.
        assert await stream.read_chunk(timeout=1) == b":\n\n"
        times = []
        for _ in range(3):
            assert await stream.read_chunk(timeout=2) == b":\n\n"
            times.append(time.perf_counter())
    # Keep-alives after 1 to 1.25 periods (0.2 s) of silence, plus scheduling slack.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.18 <= gap <= 0.4 for gap in gaps), gaps


async def test_session_keep_alive_none_sends_nothing(server: Server) -> None:
    async with EventStream(f"{server.url}/t/idle/?keep_alive=none&retry=none") as stream:
        assert await stream.read_chunk(timeout=1) == b":\n\n"
        with pytest.raises(TimeoutError):
            await stream.read_chunk(timeout=0.8)


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Last-Event-ID": "abc-1"}, "", "abc-1"),
        ({}, "?lastEventId=q-7", "q-7"),
        ({"Last-Event-ID": "h-1"}, "?lastEventId=q-2", "h-1"),
        ({"Last-Event-ID": "x" * 257}, "", None),
        ({}, "?lastEventId=a%0Ab", None),
        ({}, "?lastEventId=a%00b", None),
        ({}, "", None),
    ],
)
async def test_session_last_event_id_sources(
    server: Server, headers: dict[str, str], query: str, expected: str | None
) -> None:
    async with EventStream(f"{server.url}/t/last-id/{query}", headers=headers) as stream:
        event = await stream.next_event()
    assert json.loads(event.data or "") == {"last_event_id": expected}


async def test_session_untrusted_client_event_id_is_ignored(server: Server) -> None:
    url = f"{server.url}/t/last-id/?trust=0"
    async with EventStream(url, headers={"Last-Event-ID": "abc-1"}) as stream:
        event = await stream.next_event()
    assert event.data == '{"last_event_id":null}'


async def test_session_disconnect_cleans_up_within_a_second(server: Server) -> None:
    await fetch_json(f"{server.url}/t/reset/")
    before = await fetch_json(f"{server.url}/t/state/")
    stream = await EventStream(f"{server.url}/t/idle/?keep_alive=none").open()
    await stream.read_chunk()
    during = await fetch_json(f"{server.url}/t/state/")
    assert during["live"] == before["live"] + 1
    await stream.close()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        state = await fetch_json(f"{server.url}/t/state/")
        if state["live"] == before["live"]:
            break
        await asyncio.sleep(0.02)
    assert state["live"] == before["live"]
    assert state["held"] == before["held"]
    assert "disconnect" in state["closed"]


async def test_session_push_after_disconnect_returns_false(server: Server) -> None:
    await fetch_json(f"{server.url}/t/reset/")
    async with EventStream(f"{server.url}/t/pusher/?keep_alive=none") as stream:
        await stream.events(3)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        state = await fetch_json(f"{server.url}/t/state/")
        if state["push_after_close"] is not None:
            break
        await asyncio.sleep(0.02)
    assert state["push_after_close"] is False


async def test_session_batch_is_one_write(server: Server) -> None:
    async with EventStream(f"{server.url}/t/batch/?n=50") as stream:
        events = await stream.read_all()
    assert [e.data for e in events] == [str(i) for i in range(50)]
    data_chunks = [chunk for _, chunk in stream.chunks if chunk != b":\n\n"]
    assert len(data_chunks) == 1
    assert data_chunks[0].count(b"\n\n") == 50


async def test_session_iterate_backpressure_delivers_everything_in_order(server: Server) -> None:
    async with EventStream(f"{server.url}/t/flood/?n=20000&max_queue=50") as stream:
        events = await stream.read_all()
    assert [int(e.data or "") for e in events] == list(range(20000))
    # Coalescing: far fewer writes than events.
    assert len(stream.chunks) < 20000


async def test_session_callback_error_becomes_error_event_without_detail(server: Server) -> None:
    async with EventStream(f"{server.url}/t/failing/") as stream:
        events = await stream.read_all()
    assert events[0].data == "before"
    assert events[-1].event == "error"
    assert "secret detail" not in (events[-1].data or "")


async def test_session_head_returns_headers_only(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.head(f"{server.url}/sse/", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""

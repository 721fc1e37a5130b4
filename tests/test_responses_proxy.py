"""``SSEResponse`` as a proxy for httpx, httpx2 and any client of the documented shape.

Everything is real: an upstream (``tests/sse_upstream.py``, uvicorn in a thread of this
process), read in a view of a uvicorn test server by an ``httpx.AsyncClient`` stream, an
``httpx2.AsyncClient`` stream (the client openai 3.x speaks through) or a few lines over a
raw socket that meet the duck-typed shape (``tests.views.SocketResponse``), proxied by
``SSEResponse``, and read by httpx-sse. httpx-sse reading the upstream directly is the oracle.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.conftest import ROOT, Server
from tests.sse_upstream import TEXT_CHUNKS, Upstream

pytestmark = pytest.mark.django_db(transaction=True)
CLIENTS = ["httpx", "httpx2", "socket"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    yield server
    server.stop()


def proxied(server: Server, upstream: Upstream, path: str, client: str) -> str:
    target = quote(f"{upstream.url}{path}", safe="")
    return f"{server.url}/t/sse/proxy/?client={client}&url={target}"


def dispatched(event: ServerSentEvent) -> bool:
    # httpx-sse also reports a block with no data (a lone ``retry:``) as an event; the spec
    # (and EventSource) dispatches nothing for it.
    return bool(event.data or event.event != "message")


async def read_events(url: str) -> list[ServerSentEvent]:
    async with (
        httpx.AsyncClient(timeout=10) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in source.aiter_sse() if dispatched(event)]


def shape(events: list[ServerSentEvent]) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in events]


@pytest.mark.parametrize("client", CLIENTS)
async def test_proxy_reframes_an_sse_upstream_event_by_event(
    uvicorn_server: Server, upstream: Upstream, client: str
) -> None:
    direct = await read_events(f"{upstream.url}/events")
    assert [e.event for e in direct] == ["token", "message", "token", "done"]
    through = await read_events(proxied(uvicorn_server, upstream, "/events", client))
    assert shape(through) == shape(direct)
    assert through[1].data == "two\nlines"
    assert through[2].data == "café \N{TEACUP WITHOUT HANDLE}"


@pytest.mark.parametrize("client", ["httpx", "httpx2"])
async def test_proxy_reads_a_compressed_upstream_decoded(
    uvicorn_server: Server, upstream: Upstream, client: str
) -> None:
    direct = await read_events(f"{upstream.url}/events")
    through = await read_events(proxied(uvicorn_server, upstream, "/events-gzip", client))
    assert shape(through) == shape(direct)


@pytest.mark.parametrize("client", CLIENTS)
async def test_proxy_sends_other_content_as_data_chunks(
    uvicorn_server: Server, upstream: Upstream, client: str
) -> None:
    events = await read_events(proxied(uvicorn_server, upstream, "/text", client))
    assert {e.event for e in events} == {"message"}
    # A character split between two upstream chunks is never split into two events.
    assert "".join(e.data for e in events) == b"".join(TEXT_CHUNKS).decode()


@pytest.mark.parametrize("client", CLIENTS)
async def test_proxy_closes_the_upstream_when_the_client_leaves(
    uvicorn_server: Server, upstream: Upstream, client: str
) -> None:
    gone = upstream.closed
    async with (
        httpx.AsyncClient(timeout=10) as http,
        aconnect_sse(http, "GET", proxied(uvicorn_server, upstream, "/endless", client)) as source,
    ):
        events = (event async for event in source.aiter_sse() if dispatched(event))
        first = [await anext(events) for _ in range(3)]
    assert [(e.event, e.data) for e in first] == [("tick", "0"), ("tick", "1"), ("tick", "2")]
    assert await asyncio.to_thread(upstream.wait_closed, gone + 1)


async def test_proxy_closes_the_upstream_of_a_head_request(
    uvicorn_server: Server, upstream: Upstream
) -> None:
    # A HEAD response never streams: nothing else would ever close the upstream.
    gone = upstream.closed
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.head(proxied(uvicorn_server, upstream, "/endless", "socket"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert await asyncio.to_thread(upstream.wait_closed, gone + 1)


def test_sseresponse_imports_no_http_client() -> None:
    # Duck-typed: proxying needs neither httpx nor httpx2 installed (the core install has
    # neither as its own dependency).
    code = """
import asyncio
import sys
from django.conf import settings
settings.configure()
import django
django.setup()
from stream_app.responses import SSEResponse

class Upstream:
    headers = {"content-type": "text/event-stream"}
    async def aiter_bytes(self):
        yield b"data: x\\n\\n"
    async def aclose(self):
        pass

async def main():
    for source in (Upstream(), iter(["a"])):
        response = SSEResponse(source)
        await response.prefetch()  # what stream_app.asgi runs before the headers go out

asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("httpx", "httpx2")))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

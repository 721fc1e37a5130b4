"""The ASGI side: the WSGI guard, GZip, and streaming outside Django's per-request thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from stream_app.asgi import StreamingRequiresASGI
from stream_app.sessions import create_session
from stream_app.testing import EventStream
from tests.conftest import Server

pytestmark = pytest.mark.django_db(transaction=True)


def test_wsgi_stream_view_answers_500_with_a_message() -> None:
    response = Client().get("/sse/")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "asgi_required"
    assert "ASGI" in body["message"]


async def test_wsgi_create_session_raises_a_clear_error() -> None:
    request = RequestFactory().get("/sse/")
    with pytest.raises(StreamingRequiresASGI, match="daphne or uvicorn"):
        await create_session(request)


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_gzip_middleware_neither_compresses_nor_delays(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind, {"STREAM_GZIP": "1"})
    url = f"{server.url}/t/sse/async/"
    async with EventStream(url, headers={"Accept-Encoding": "gzip"}) as stream:
        events = await stream.read_all()
        response = stream.response
        assert response is not None
        assert response.headers["content-encoding"] == "identity"
    assert [e.data for e in events] == ["0", "1", "2", "last"]
    # Sent as produced (10 ms apart), not held back into one compressed block at the end.
    assert len([c for _, c in stream.chunks if c.startswith(b"data: ")]) >= 3


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("Threads")))


@pytest.mark.parametrize(("plain", "max_growth"), [("", 3), ("1", None)])
async def test_handoff_holds_no_thread_per_open_stream(
    server_factory: Callable[..., Server], plain: str, max_growth: int | None
) -> None:
    server = server_factory("uvicorn", {"STREAM_PLAIN_DJANGO": plain})
    warm = await EventStream(f"{server.url}/t/idle/?keep_alive=none").open()
    await warm.read_chunk()
    before = _threads(server.proc.pid)
    streams = [await EventStream(f"{server.url}/t/idle/?keep_alive=none").open() for _ in range(30)]
    try:
        await asyncio.gather(*(s.read_chunk() for s in streams))
        await asyncio.sleep(0.2)
        growth = _threads(server.proc.pid) - before
        if max_growth is None:
            # Django's own handler keeps one thread per open stream: the cost we avoid.
            assert growth >= 25
        else:
            assert growth <= max_growth
    finally:
        for stream in [warm, *streams]:
            await stream.close()

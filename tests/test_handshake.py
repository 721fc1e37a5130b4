"""Opening a stream cheaply: pooled request threads and the one-hop middleware chain.

Real servers (uvicorn, daphne) over real sockets; ``tests.handshake_views`` reports what each
part of a request saw. ``STREAM_PLAIN_DJANGO=1`` serves the same project with Django's own
handler, to show that the assertions fail without ``stream_app.asgi``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import SyncToAsync, sync_to_async

from stream_app import threads
from stream_app.testing import EventStream
from tests.conftest import Server, fetch_json

pytestmark = pytest.mark.django_db(transaction=True)

RECORDING = {"STREAM_RECORDING_MIDDLEWARE": "1"}


async def _first_event(url: str) -> tuple[httpx.Response, Any]:
    async with EventStream(url) as stream:
        event = await stream.next_event()
        assert stream.response is not None
        return stream.response, json.loads(event.data)


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_stream_endpoint_runs_the_middleware_in_one_synchronous_chain(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind, RECORDING)
    response, threads_seen = await _first_event(f"{server.url}/t/hs/endpoint/")
    assert response.headers["x-chain"] == "sync"
    # request_started, the middleware and the view's sync_to_async calls share one thread.
    assert int(response.headers["x-middleware-thread"]) == threads_seen["middleware_thread"]
    assert threads_seen["view_sync_thread"] == threads_seen["middleware_thread"]
    assert threads_seen["started_thread"] == threads_seen["middleware_thread"]
    # Every other view keeps Django's asynchronous chain.
    async with httpx.AsyncClient() as client:
        plain = await client.get(f"{server.url}/t/hs/plain/")
    assert plain.headers["x-chain"] == "async"
    assert plain.json()["view_sync_thread"] == plain.json()["middleware_thread"]


async def test_djangos_handler_runs_the_same_endpoint_through_the_async_chain(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory("uvicorn", {**RECORDING, "STREAM_PLAIN_DJANGO": "1"})
    response, _ = await _first_event(f"{server.url}/t/hs/endpoint/")
    assert response.headers["x-chain"] == "async"


@pytest.mark.parametrize("plain", ["", "1"])
async def test_request_threads_are_reused(
    server_factory: Callable[..., Server], plain: str
) -> None:
    server = server_factory("uvicorn", {**RECORDING, "STREAM_PLAIN_DJANGO": plain})
    names = set()
    async with httpx.AsyncClient() as client:
        for _ in range(10):
            answer = (await client.get(f"{server.url}/t/hs/plain/")).json()
            names.add(answer["view_sync_thread_name"])
            assert answer["view_sync_thread"] == answer["middleware_thread"]
    if plain:
        # Django's handler starts (and joins) a new thread for every request.
        assert len(names) == 10
    else:
        # One request at a time (the next may start before the last has let its thread go).
        assert len(names) <= 2
        assert all(name.startswith("stream_app-request-") for name in names)


async def test_tasks_a_stream_view_started_can_call_sync_code_after_it_returned(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory("uvicorn")
    async with EventStream(f"{server.url}/t/hs/leftover/") as stream:
        assert (await stream.next_event()).data == "started"
    for _ in range(50):
        leftover = (await fetch_json(f"{server.url}/t/hs/report/"))["leftover"]
        if leftover:
            break
        await asyncio.sleep(0.05)
    assert leftover == ["stream_app-leftover"]


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_a_client_that_leaves_cancels_a_slow_stream_view(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /t/hs/slow/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    # Leave once the view runs (a client that leaves during the middleware is noticed when the
    # view returns, in Django's handler as here: sync code cannot be interrupted).
    for _ in range(100):
        if (await fetch_json(f"{server.url}/t/hs/report/"))["slow"]:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.1)
    writer.close()
    for _ in range(50):
        if (await fetch_json(f"{server.url}/t/hs/report/"))["cancelled"]:
            break
        await asyncio.sleep(0.05)
    assert (await fetch_json(f"{server.url}/t/hs/report/"))["cancelled"] == 1


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_stream_endpoint_errors_are_answered_like_django(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind)
    async with httpx.AsyncClient() as client:
        broken = await client.get(f"{server.url}/t/hs/broken/")
        assert broken.status_code == 500
        # A Host that ALLOWED_HOSTS refuses: Django's 400, from the middleware chain.
        refused = await client.get(f"{server.url}/sse/?channel=news", headers={"Host": "evil"})
        assert refused.status_code == 400
        head = await client.head(f"{server.url}/sse/?channel=news")
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
    # And the server goes on serving streams.
    _, threads_seen = await _first_event(f"{server.url}/t/hs/endpoint/")
    assert threads_seen["view_sync_thread"]


def _executor_of(context: threads.RequestThreadContext) -> threads.RequestThread:
    # Where asgiref looks up a context's executor.
    executor = SyncToAsync.context_to_thread_executor[context]
    assert isinstance(executor, threads.RequestThread)
    return executor


async def test_the_pool_keeps_idle_threads_and_retires_busy_ones() -> None:
    async def used() -> threads.RequestThread:
        async with threads.RequestThreadContext() as context:
            await sync_to_async(threading.get_ident)()
            return _executor_of(context)

    first = await used()
    assert await used() is first
    # A thread with work still queued when its request ends is not lent again.
    release = threading.Event()
    async with threads.RequestThreadContext() as context:
        busy = _executor_of(context)
        busy.submit(release.wait, 5)
    assert await used() is not busy
    release.set()

"""Yardstick (a): a raw ASGI app, the floor any SSE layer on this server can approach.

- ``GET /sse``: a fan-out listener, one ``asyncio.Queue`` per connection;
- ``POST /broadcast?k=&rate=``: put ``k`` pre-encoded frames, ``rate`` per second, in every queue;
- ``GET /tokens?n=``: write ``n`` tiny frames, one ``send`` each (the server's own backpressure);
- ``GET /stats``: ``{"open": listeners}``.

Serve it with ``uvicorn bench.raw_asgi:app`` (or daphne, granian).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from bench.pacing import broadcast_frames, token_frame

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
listeners: set[asyncio.Queue[bytes | None]] = set()
# Strong references: the loop keeps only weak ones to running tasks.
_tasks: set[asyncio.Task[None]] = set()


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _watch(receive: Receive, queue: asyncio.Queue[bytes | None]) -> None:
    # An idle stream never writes, so only receive() tells that the client left.
    while (await receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(None)


async def _listen(receive: Receive, send: Send) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    listeners.add(queue)
    watcher = asyncio.ensure_future(_watch(receive, queue))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        # daphne holds the headers back until the first body byte.
        await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
        while (frame := await queue.get()) is not None:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
    except OSError:
        pass  # uvicorn: a write after the client left
    finally:
        listeners.discard(queue)
        watcher.cancel()


async def _tokens(count: int, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for index in range(count):
        await send({"type": "http.response.body", "body": token_frame(index), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    query = parse_qs(scope["query_string"].decode())
    path = scope["path"]
    if path == "/sse":
        await _listen(receive, send)
    elif path == "/tokens":
        await _tokens(int(query["n"][0]), send)
    elif path == "/broadcast":
        task = asyncio.ensure_future(
            broadcast_frames(int(query["k"][0]), float(query["rate"][0]), listeners)
        )
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        await _respond(send, 202, {})
    elif path == "/stats":
        await _respond(send, 200, {"open": len(listeners), "threads": threading.active_count()})
    else:
        await _respond(send, 404, {"error": "not_found"})

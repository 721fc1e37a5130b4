"""Yardstick (b): plain Django async views with hand-written SSE, no stream_app.

``StreamingHttpResponse`` over an async generator, served by Django's own ASGI handler; the
fan-out keeps one ``asyncio.Queue`` per listener, as the raw ASGI yardstick does. It runs in
whichever project the benchmark serves (the same middleware, database and cookies as ours) and,
like any stream that knows its users, looks the user up (``await request.auser()``: the
session and the user from the database when the client sends a session cookie).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from bench.pacing import broadcast_frames, token_frame

listeners: set[asyncio.Queue[bytes | None]] = set()
_tasks: set[asyncio.Task[None]] = set()


def _sse(content: AsyncIterator[bytes]) -> StreamingHttpResponse:
    return StreamingHttpResponse(
        content, content_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _listen() -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    listeners.add(queue)
    try:
        yield b":\n\n"
        while (frame := await queue.get()) is not None:
            yield frame
    finally:
        listeners.discard(queue)


async def listen(request: HttpRequest) -> HttpResponse:
    """A fan-out listener (for the request's user, as a real one would be)."""
    await request.auser()
    return _sse(_listen())


@csrf_exempt
async def broadcast(request: HttpRequest) -> HttpResponse:
    """POST ``?k=&rate=``: put ``k`` pre-encoded frames in every listener's queue."""
    task = asyncio.ensure_future(
        broadcast_frames(int(request.GET["k"]), float(request.GET["rate"]), listeners)
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return JsonResponse({}, status=202)


async def _tokens(count: int) -> AsyncIterator[bytes]:
    for index in range(count):
        yield token_frame(index)


async def tokens(request: HttpRequest) -> HttpResponse:
    """``?n=``: ``n`` tiny events, one ``yield`` each."""
    await request.auser()
    return _sse(_tokens(int(request.GET["n"])))


async def stats(request: HttpRequest) -> JsonResponse:
    """Listeners open in this process and OS threads."""
    return JsonResponse({"open": len(listeners), "threads": threading.active_count()})

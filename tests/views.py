"""Views the test servers expose to exercise sessions over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
from django.http import HttpRequest, HttpResponse, JsonResponse

from stream_app import SSEResponse, create_channel, create_response, create_session
from stream_app.channels import channel_snapshot, get_channel
from stream_app.protocol import Event
from stream_app.responses import Stream
from stream_app.sessions import QueueFull, Session, live_sessions, stats

# What happened in this server process, for the tests to read back over HTTP.
record: dict[str, Any] = {"closed": [], "push_after_close": None}
_hold = create_channel()
_tasks: set[asyncio.Task[None]] = set()
_proxy_clients: dict[str, Any] = {}


def _options(request: HttpRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, cast in (("keep_alive", float), ("retry", int), ("max_queue", int)):
        value = request.GET.get(name)
        if value is not None:
            options[name] = None if value == "none" else cast(value)
    if "overflow" in request.GET:
        options["overflow"] = request.GET["overflow"]
    return options


def _track(session: Session) -> None:
    session.on_close(lambda s: record["closed"].append(s.close_reason))


async def push(request: HttpRequest) -> HttpResponse:
    """Push ``n`` events of type ``event`` then close."""
    count = int(request.GET.get("n", "3"))

    async def run(session: Session) -> None:
        for i in range(count):
            session.push({"i": i}, request.GET.get("event"))

    return await create_response(request, run, **_options(request))


async def idle(request: HttpRequest) -> HttpResponse:
    """A stream that stays open with no events (keep-alives only)."""
    session = await create_session(request, **_options(request))
    _track(session)
    _hold.register(session)
    return session.response


async def last_id(request: HttpRequest) -> HttpResponse:
    """Echo the session's validated last event id."""
    trust = request.GET.get("trust", "1") == "1"

    async def run(session: Session) -> None:
        session.push({"last_event_id": session.last_event_id})

    return await create_response(request, run, trust_client_event_id=trust)


async def flood(request: HttpRequest) -> HttpResponse:
    """``iterate`` over n tiny events with backpressure, then close."""
    count = int(request.GET.get("n", "1000"))

    async def run(session: Session) -> None:
        await session.iterate(range(count))

    return await create_response(request, run, **_options(request))


async def flood_held(request: HttpRequest) -> JsonResponse:
    """Push ``n`` events of ``size`` bytes to every session held by the test channel."""
    payload = "x" * int(request.GET.get("size", "1000"))
    for _ in range(int(request.GET.get("n", "1"))):
        _hold.broadcast(payload)
    return JsonResponse({"held": _hold.session_count})


async def batch(request: HttpRequest) -> HttpResponse:
    """n events in one batch, after a pause so that the batch is the only write pending."""
    count = int(request.GET.get("n", "50"))

    async def run(session: Session) -> None:
        await asyncio.sleep(0.2)
        async with session.batch() as buffer:
            for i in range(count):
                buffer.push(i)
        await asyncio.sleep(0.2)

    return await create_response(request, run, retry=None, keep_alive=None)


async def pusher(request: HttpRequest) -> HttpResponse:
    """A producer task outside the session pushes every ``every`` s until a push fails.

    The task is not the session's callback (that one is cancelled on disconnect): it is what a
    producer elsewhere holding a session sees. Its last push result is recorded.
    """
    overflow = request.GET.get("overflow", "close")
    payload = "x" * int(request.GET.get("size", "10"))
    every = float(request.GET.get("every", "0.02"))
    options = _options(request)
    options["overflow"] = overflow
    session = await create_session(request, **options)
    _track(session)
    _hold.register(session)

    async def produce() -> None:
        while True:
            try:
                ok = session.push(payload)
            except QueueFull:
                record["push_after_close"] = "queue_full"
                return
            if not ok:
                record["push_after_close"] = ok
                return
            await asyncio.sleep(every)

    _tasks.add(asyncio.ensure_future(produce()))
    return session.response


async def failing(request: HttpRequest) -> HttpResponse:
    """A callback that raises after sending one event."""

    async def run(session: Session) -> None:
        session.push("before")
        await asyncio.sleep(0.05)
        raise RuntimeError("secret detail")

    return await create_response(request, run)


async def unsent(request: HttpRequest) -> HttpResponse:
    """Register a session on ``beta``, then fail (``?fail=1``) or answer something else."""
    session = await create_session(request)
    get_channel("beta").register(session)
    if request.GET.get("fail"):
        raise RuntimeError("the view failed after creating its session")
    return HttpResponse("not a stream")


async def state(request: HttpRequest) -> JsonResponse:
    """This process's session counters and what the hooks recorded."""
    return JsonResponse(
        {
            "open": stats.open,
            "live": len(live_sessions),
            "slow_consumers": stats.slow_consumers,
            "closed": record["closed"],
            "push_after_close": record["push_after_close"],
            "held": _hold.session_count,
            "tasks": len(asyncio.all_tasks()),
            "gc_threshold": list(gc.get_threshold()),
            "gc_frozen": gc.get_freeze_count(),
            "channels": channel_snapshot(),
        }
    )


async def reset(request: HttpRequest) -> JsonResponse:
    """Clear the record."""
    record["closed"] = []
    record["push_after_close"] = None
    return JsonResponse({})


async def sse_iterable(request: HttpRequest) -> HttpResponse:
    """SSEResponse over a list: str, dict and a pydantic model (an OpenAI chunk)."""
    from openai.types.chat import ChatCompletionChunk

    chunk = ChatCompletionChunk(
        id="c1", choices=[], created=0, model="m", object="chat.completion.chunk"
    )
    return SSEResponse(["text", {"n": 1}, chunk], event="item", request=request)


async def sse_async(request: HttpRequest) -> HttpResponse:
    """SSEResponse over an async generator, with Event items keeping their own type and id."""

    async def source() -> AsyncIterator[Any]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i
        yield Event(data="last", event="end", id="e-9")

    return SSEResponse(source(), request=request)


async def sse_manual(request: HttpRequest) -> HttpResponse:
    """Manual mode with a callback: send, wait, close."""

    async def run(stream: Stream) -> None:
        stream.send("one")
        await stream.wait(20)
        stream.send({"two": 2}, event="second", id="m-2")
        stream.close()
        stream.send("after close")

    return SSEResponse(run, request=request)


async def sse_value(request: HttpRequest) -> HttpResponse:
    """Value-based manual mode: a producer elsewhere uses response.stream."""
    response = SSEResponse(request=request)

    async def produce() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            response.stream.send(i)
        response.stream.close()

    _tasks.add(asyncio.ensure_future(produce()))
    return response


async def sse_fail_before(request: HttpRequest) -> HttpResponse:
    """A source that fails before its first item: a normal 500 response."""

    async def source() -> AsyncIterator[str]:
        raise RuntimeError("upstream refused")
        yield "never"

    return SSEResponse(source(), request=request)


async def sse_fail_after(request: HttpRequest) -> HttpResponse:
    """A source that fails after its first item: one error event, then the end."""

    async def source() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(0.01)
        raise RuntimeError("secret detail")

    return SSEResponse(source(), request=request)


async def sse_proxy(request: HttpRequest) -> HttpResponse:
    """Proxy an upstream (``?url=``) read with ``?client=``: httpx (default), httpx2 or socket."""
    url = request.GET["url"]
    kind = request.GET.get("client", "httpx")
    if kind == "socket":
        upstream: Any = await SocketResponse.get(url)
        return SSEResponse(upstream, request=request)
    # One long-lived client per library, as an application keeps one: only SSEResponse closing
    # the upstream response lets go of its connection.
    client = _proxy_clients.get(kind)
    if client is None:
        module: Any = httpx2 if kind == "httpx2" else httpx
        client = _proxy_clients[kind] = module.AsyncClient(timeout=10)
    upstream = await client.send(client.build_request("GET", url), stream=True)
    return SSEResponse(upstream, request=request)


class SocketResponse:
    """The duck-typed shape ``SSEResponse`` proxies, met by a few lines over a socket.

    HTTP/1.0, so the body ends when the connection does (no chunked framing to undo).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        self.headers = headers
        self._reader = reader
        self._writer = writer

    @classmethod
    async def get(cls, url: str) -> SocketResponse:
        """Send ``GET url`` and read the status line and headers."""
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        fields = (line.partition(":") for line in head.split("\r\n")[1:] if line)
        return cls(reader, writer, {k.strip().lower(): v.strip() for k, _, v in fields})

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while chunk := await self._reader.read(65536):
            yield chunk

    async def aclose(self) -> None:
        """Close the connection (the upstream sees its client leave)."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

"""The load generator: raw asyncio sockets, minimal HTTP/1.1, SSE scanned as bytes arrive.

One ``asyncio.Protocol`` per connection (cheaper than streams at 10,000 connections). The body is
never decoded as text: fan-out listeners find the ``"t":<stamp>`` of each complete event with one
regex over the bytes up to the last ``\\n\\n``, and token streams count ``data:`` with
``bytes.count``. Chunked transfer framing sits between events, so neither scan is fooled by it.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

__all__ = [
    "HOST",
    "ChurnConn",
    "CountConn",
    "EventsConn",
    "FanoutConn",
    "Tally",
    "churn",
    "get_request",
    "http_json",
    "open_many",
]

HOST = "127.0.0.1"
MAX_HEAD = 16_384
_STAMP = re.compile(rb'"t":([0-9.]+)')
# The end of a chunked body (last-chunk and an empty trailer).
_CHUNKED_END = b"0\r\n\r\n"

C = TypeVar("C", bound="Conn")


def get_request(path: str, port: int, headers: str = "") -> bytes:
    """A minimal HTTP/1.1 GET for an event stream; ``headers``: more lines, each ending CRLF."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n{headers}\r\n"
    ).encode()


class Conn(asyncio.Protocol):
    """One HTTP/1.1 request: the response head is parsed, each body read goes to ``body``."""

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self._head = b""
        self.head_done: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.t_sent = 0.0
        self.t_first_byte: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.t_sent = time.time()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        # Wall clock: the servers stamp events with time.time() in another process.
        now = time.time()
        if not self.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD and self.transport is not None:
                    self.transport.abort()
                return
            status = self._head[: self._head.find(b"\r\n")].split(b" ", 2)
            self.status = int(status[1]) if len(status) > 1 and status[1].isdigit() else -1
            data, self._head = self._head[end + 4 :], b""
            if not self.head_done.done():
                self.head_done.set_result(self.status)
            if not data:
                return
        if self.t_first_byte is None:
            self.t_first_byte = now
        self.body(data, now)

    def body(self, data: bytes, now: float) -> None:
        """Handle one read of the response body (after the head)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head_done.done():
            self.head_done.set_exception(ConnectionError("closed before the response head"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close the connection (FIN, as a browser closing an EventSource)."""
        if self.transport is not None:
            self.transport.close()


class Tally:
    """The latencies of every stamped event all listeners received; ``done`` at ``expected``."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.expected: int | None = None
        self.done = asyncio.Event()

    def add(self, now: float, stamps: list[bytes]) -> None:
        """Record events stamped ``stamps`` and received at ``now``."""
        self.latencies.extend(now - float(stamp) for stamp in stamps)
        if self.expected is not None and len(self.latencies) >= self.expected:
            self.done.set()


class EventsConn(Conn):
    """A listener that hands on complete events only: the bytes up to the last ``\n\n`` of
    what has arrived go to ``events``, the rest waits for the next read."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self._tail = b""

    def body(self, data: bytes, now: float) -> None:
        buffer = self._tail + data if self._tail else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._tail = buffer
            return
        self._tail = buffer[cut + 2 :]
        self.events(buffer, cut, now)

    def events(self, buffer: bytes, end: int, now: float) -> None:
        """Handle the complete events in ``buffer[:end]``, read at ``now``."""


class FanoutConn(EventsConn):
    """A listener: adds the latency of every stamped event to a shared ``Tally``."""

    def __init__(self, request: bytes, tally: Tally) -> None:
        super().__init__(request)
        self.tally = tally

    def events(self, buffer: bytes, end: int, now: float) -> None:
        stamps = _STAMP.findall(buffer, 0, end)
        if stamps:
            self.tally.add(now, stamps)


class CountConn(Conn):
    """A token stream: counts ``data:`` lines until ``expect``, the body's end, or a close."""

    def __init__(self, request: bytes, expect: int) -> None:
        super().__init__(request)
        self.expect = expect
        self.count = 0
        self.t_first_event: float | None = None
        self.t_done: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Four bytes of the previous read: a "data:" split across reads is counted once.
        self._tail = b""

    def body(self, data: bytes, now: float) -> None:
        chunk = self._tail + data
        found = chunk.count(b"data:")
        if found:
            self.count += found
            if self.t_first_event is None:
                self.t_first_event = now
        self._tail = chunk[-4:]
        if self.count >= self.expect or chunk.endswith(_CHUNKED_END):
            self._finish(now)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._finish(time.time())

    def _finish(self, now: float) -> None:
        if not self.done.done():
            self.t_done = now
            self.done.set_result(None)


class ChurnConn(Conn):
    """Connects, waits for the first body byte (the stream has started), and is closed."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def body(self, data: bytes, now: float) -> None:
        if not self.started.done():
            self.started.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.started.done():
            self.started.set_exception(ConnectionError("closed before the first body byte"))


@dataclass
class Opened:
    """The outcome of ``open_many``."""

    conns: list[Any]
    failed: int
    seconds: float


async def open_many(
    factory: Callable[[int, int], C],
    ports: Sequence[int],
    count: int,
    *,
    concurrency: int = 200,
    timeout: float = 120.0,
) -> Opened:
    """Open ``count`` connections spread over ``ports``, ``concurrency`` handshakes at a time.

    A connection counts once its response head says 200; ``factory(port, index)`` builds the
    protocol of the ``index``-th connection.
    """
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    conns: list[C] = []
    failed = 0

    async def one(index: int) -> None:
        nonlocal failed
        port = ports[index % len(ports)]
        async with gate:
            try:
                async with asyncio.timeout(15):
                    _, conn = await loop.create_connection(lambda: factory(port, index), HOST, port)
                    status = await conn.head_done
            except (OSError, TimeoutError):
                failed += 1
                return
            if status == 200:
                conns.append(conn)
            else:
                failed += 1
                conn.close()

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        failed = count - len(conns)
    return Opened(conns, failed, time.perf_counter() - start)


@dataclass
class ChurnResult:
    """Connections opened, streamed and closed in ``seconds``."""

    completed: int
    failed: int
    seconds: float


async def churn(
    request: Callable[[int, int], bytes], port: int, seconds: float, concurrency: int
) -> ChurnResult:
    """Open, wait for the stream's first byte, close; ``concurrency`` loops for ``seconds``.

    ``request(port, index)`` is the ``index``-th connection's request.
    """
    loop = asyncio.get_running_loop()
    completed = failed = attempts = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal completed, failed, attempts
        while time.perf_counter() < deadline:
            conn: ChurnConn | None = None
            attempts += 1
            data = request(port, attempts)
            try:
                async with asyncio.timeout(5):
                    _, conn = await loop.create_connection(partial(ChurnConn, data), HOST, port)
                    await conn.started
                completed += 1
            except (OSError, TimeoutError):
                failed += 1
                await asyncio.sleep(0.01)
            finally:
                if conn is not None:
                    conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ChurnResult(completed, failed, time.perf_counter() - start)


async def http_json(port: int, method: str, path: str, timeout: float = 10.0) -> Any:
    """A one-shot request (``Connection: close``) whose body is JSON; raises on non-2xx."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            raw = await reader.read(-1)
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if not 200 <= status < 300:
        raise ConnectionError(f"{method} {path}: status {status}: {raw[:300]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return json.loads(body)


def _unchunk(body: bytes) -> bytes:
    """The payload of a complete chunked body (a response without Content-Length)."""
    parts = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append(body[:size])
        body = body[size + 2 :]
    return b"".join(parts)

"""A tiny upstream for the proxy tests: a raw ASGI app served by uvicorn in a thread.

- ``GET /events``: a finished SSE stream with event types, ids, multi-line data, a ``retry``
  field and comments, written in odd chunk boundaries (a field split across two writes);
- ``GET /events-gzip``: the same stream with ``Content-Encoding: gzip``;
- ``GET /text``: plain text in several chunks, a multi-byte character split between two;
- ``GET /endless``: one event every 20 ms until the client leaves.

Every response records whether its client went away (``http.disconnect`` or a failed send):
``opened`` and ``closed`` count the ``/endless`` streams, so a test can see a proxy let go of
its upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import time
from typing import Any

import uvicorn

from tests.conftest import free_port

__all__ = ["EVENTS_BODY", "TEXT_CHUNKS", "Upstream"]

EVENTS_BODY = (
    b": a comment first\n"
    b"retry: 1500\n\n"
    b"event: token\nid: u-1\ndata: Hello\n\n"
    b"data: two\ndata: lines\n\n"
    b"event: token\nid: u-2\ndata: caf\xc3\xa9 \xf0\x9f\x8d\xb5\n\n"
    b'event: done\nid: u-3\ndata: {"finish": "stop"}\n\n'
)
TEXT_CHUNKS = [b"plain ", b"text, caf\xc3", b"\xa9 and ", b"tea \xf0\x9f", b"\x8d\xb5 at the end"]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Upstream:
    """The server: ``start()``, ``url``, the ``/endless`` counters, ``stop()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.opened = 0
        self.closed = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Run uvicorn in a thread; return once it listens."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def wait_closed(self, count: int, timeout: float = 5.0) -> bool:
        """Whether ``count`` ``/endless`` clients have gone within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.closed < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app (see the module docstring)."""
        path = scope["path"]
        if path == "/events":
            await _chunks(
                send, _SSE_HEADERS, [EVENTS_BODY[:50], EVENTS_BODY[50:61], EVENTS_BODY[61:]]
            )
        elif path == "/events-gzip":
            body = gzip.compress(EVENTS_BODY)
            await _chunks(send, [*_SSE_HEADERS, (b"content-encoding", b"gzip")], [body])
        elif path == "/text":
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await _chunks(send, headers, TEXT_CHUNKS)
        elif path == "/endless":
            await self._endless(receive, send)
        else:
            await _chunks(send, [(b"content-type", b"text/plain")], [b"not found"], status=404)

    async def _endless(self, receive: Any, send: Any) -> None:
        self.opened += 1
        left = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            n = 0
            while not left.is_set():
                frame = f"event: tick\nid: e-{n}\ndata: {n}\n\n".encode()
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(left.wait(), 0.02)
        except OSError:
            pass  # uvicorn raises ClientDisconnected on a send after the client left
        finally:
            watcher.cancel()
            self.closed += 1


async def _chunks(
    send: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes], status: int = 200
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0.005)
    await send({"type": "http.response.body", "body": b""})

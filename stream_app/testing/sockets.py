"""Read an SSE response from a real server (daphne, uvicorn) over a socket, as events.

``httpx``'s ASGITransport buffers whole responses and hides disconnects, so this helper talks
to a real server over a socket and decodes with ``stream_app.protocol``. It needs ``httpx``
(the ``testing`` extra)::

    async with EventStream(f"{base_url}/sse/?channel=news") as stream:
        event = await stream.next_event()

In process, with no server, use ``stream_app.testing.read_stream`` instead.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from ..extras import MissingExtra
from ..protocol import Decoder, Event

try:
    import httpx
except ImportError as exc:
    raise MissingExtra("testing", "EventStream") from exc

__all__ = ["EventStream"]


class EventStream:
    """An open SSE response: events as they arrive, plus the raw chunks and their times."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        method: str = "GET",
    ) -> None:
        self.url = url
        self.method = method
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.timeout = timeout
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout))
        self.decoder = Decoder()
        self.response: httpx.Response | None = None
        self.chunks: list[tuple[float, bytes]] = []
        self._pending: list[Event] = []
        self._iterator: Any = None
        self.opened_at = 0.0

    async def __aenter__(self) -> EventStream:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> EventStream:
        """Send the request and read the status line and headers."""
        self.opened_at = time.perf_counter()
        request = self.client.build_request(self.method, self.url, headers=self.headers)
        self.response = await self.client.send(request, stream=True)
        self._iterator = self.response.aiter_raw()
        return self

    @property
    def status_code(self) -> int:
        """The response status."""
        assert self.response is not None
        return self.response.status_code

    async def read_chunk(self, timeout: float | None = None) -> bytes:
        """The next raw chunk; b"" at the end of the stream."""
        try:
            chunk: bytes = await asyncio.wait_for(
                self._iterator.__anext__(), timeout or self.timeout
            )
        except StopAsyncIteration:
            return b""
        self.chunks.append((time.perf_counter(), chunk))
        return chunk

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event; raises EOFError if the stream ends first, TimeoutError on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while not self._pending:
            chunk = await self.read_chunk(max(0.001, deadline - loop.time()))
            if not chunk:
                raise EOFError("the stream ended")
            self._pending.extend(self.decoder.feed(chunk))
        return self._pending.pop(0)

    async def events(self, count: int, timeout: float | None = None) -> list[Event]:
        """The next ``count`` events."""
        return [await self.next_event(timeout) for _ in range(count)]

    async def read_all(self, timeout: float | None = None) -> list[Event]:
        """Every event until the server ends the stream."""
        events: list[Event] = []
        while True:
            try:
                events.append(await self.next_event(timeout))
            except EOFError:
                return events

    async def close(self) -> None:
        """Close the connection (the server sees a disconnect)."""
        if self.response is not None:
            await self.response.aclose()
        if self._own_client:
            await self.client.aclose()

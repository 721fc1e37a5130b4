"""``SSEResponse``: a ``StreamingHttpResponse`` built from a source, like Elysia's ``Stream``.

Automatic mode streams a source until it ends:

- a sync or async iterable: each item is one event (``str`` as is; a ``protocol.Event`` with its
  own type and id; pydantic models such as the OpenAI SDK's chunks via ``model_dump_json()``;
  anything else as JSON);
- an ``httpx.Response`` opened with ``stream=True``: an upstream that already speaks SSE is
  re-framed event by event (type, data and id kept), anything else is sent as data chunks.

Manual mode hands you the stream: pass ``async def callback(stream)``, or no source at all and
use ``response.stream``; then ``stream.send(data, event=None, id=None)``, ``stream.close()``
and ``await stream.wait(ms)``.

Errors: an exception from the source after the first byte becomes one ``event: error`` frame
(a JSON body with a message; the exception text and traceback only when ``DEBUG``) and the
stream ends. Under ``stream_app.asgi``'s handler, the first item of an automatic source is
pulled before the headers go out, so an exception there is a normal Django error response.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from django.http import HttpRequest

from .protocol import Decoder, Event
from .sessions import UNSET, Session, SessionResponse, Unset

__all__ = ["SSEResponse", "Stream"]

logger = logging.getLogger("stream_app")
_END = object()


def _item_text(item: Any, session: Session) -> str:
    if isinstance(item, str):
        return item
    dump = getattr(item, "model_dump_json", None)
    if callable(dump):
        return str(dump(exclude_unset=True))
    return session.serialize(item)


class SSEResponse(SessionResponse):
    """A streaming response fed by a source (automatic) or by ``send`` calls (manual)."""

    def __init__(
        self,
        source: Any = None,
        *,
        event: str | None = None,
        request: HttpRequest | None = None,
        retry: int | Unset | None = UNSET,
        keep_alive: float | Unset | None = UNSET,
        status: int = 200,
        headers: dict[str, str] | None = None,
        serializer: Any = json,
        max_queue: int | None = None,
    ) -> None:
        session = Session(
            request,
            retry=retry,
            keep_alive=keep_alive,
            serializer=serializer,
            max_queue=max_queue,
            response=self,
        )
        super().__init__(session, status, headers)
        self.event = event
        self._source = source
        self._source_iterator: AsyncIterator[Any] | None = None
        self._first: Any = _END
        self._prefetched = False
        self.stream = Stream(session)
        if source is not None:
            session.on_start(self._produce)

    # -- automatic mode ------------------------------------------------------------------------

    def _items(self) -> AsyncIterator[Any]:
        source = self._source
        if _is_httpx_response(source):
            return _from_upstream(source)
        if isinstance(source, AsyncIterable):
            return aiter(source)
        if isinstance(source, Iterable) and not isinstance(source, str | bytes):
            return _from_sync(source)
        raise TypeError(f"SSEResponse cannot stream a {type(source).__name__}")

    async def prefetch(self) -> None:
        """Pull the first item now, so an error before the first byte can be a 500 response."""
        if self._prefetched or self._source is None or callable(self._source):
            return
        self._prefetched = True
        self._source_iterator = self._items()
        try:
            self._first = await anext(self._source_iterator)
        except StopAsyncIteration:
            self._first = _END

    async def _produce(self, session: Session) -> None:
        source = self._source
        if callable(source) and not _is_httpx_response(source):
            result = source(self.stream)
            if inspect.isawaitable(result):
                await result
            return
        if self._source_iterator is None:
            self._source_iterator = self._items()
        elif self._first is not _END and not await self._emit(self._first):
            return
        self._first = _END
        async for item in self._source_iterator:
            if not await self._emit(item):
                return

    async def _emit(self, item: Any) -> bool:
        session = self.session
        if isinstance(item, Event):
            return await session.send(item.data or "", item.event, item.id)
        return await session.send(_item_text(item, session), self.event)


class Stream:
    """The manual-mode handle: what a callback receives, and ``SSEResponse().stream``."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def send(self, data: Any, event: str | None = None, id: str | None = None) -> bool:
        """Queue one event without waiting; False once the stream has ended."""
        return self.session.push(data, event, id)

    def close(self) -> None:
        """End the stream once the queued events are written."""
        self.session.close()

    async def wait(self, ms: float) -> None:
        """Sleep ``ms`` milliseconds (Elysia's ``stream.wait``)."""
        await asyncio.sleep(ms / 1000)

    @property
    def is_connected(self) -> bool:
        """True while the client is connected."""
        return self.session.is_connected


async def _from_sync(source: Iterable[Any]) -> AsyncIterator[Any]:
    # A sync iterator's items are taken one at a time; a blocking one belongs in a thread.
    for item in source:
        yield item
        await asyncio.sleep(0)


def _is_httpx_response(source: Any) -> bool:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency of openai
        return False
    return isinstance(source, httpx.Response)


async def _from_upstream(response: Any) -> AsyncIterator[Any]:
    """Events from a streamed httpx response; closes it however the stream ends."""
    try:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            decoder = Decoder()
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    yield event
        else:
            async for text in response.aiter_text():
                if text:
                    yield text
    finally:
        await response.aclose()

"""``SSEResponse``: a ``StreamingHttpResponse`` built from a source, like Elysia's ``Stream``.

Automatic mode streams a source until it ends:

- a sync or async iterable: each item is one event (``str`` as is; a ``protocol.Event`` with its
  own type and id; pydantic models such as the OpenAI SDK's chunks via ``model_dump_json()``;
  anything else as JSON);
- a streamed upstream HTTP response to proxy: an upstream that already speaks SSE is re-framed
  event by event (type, data and id kept), anything else is sent as text data chunks (decoded
  with the response's charset, UTF-8 by default, a character never split between two events).
  ``httpx.Response`` and ``httpx2.Response`` (the client of openai 3.x) opened with
  ``stream=True`` qualify, and so does any object of the same shape, recognised by duck
  typing (neither library is imported here):

  - ``headers``: a mapping whose ``get("content-type")`` gives the content type (httpx's
    headers are case-insensitive; a plain ``dict`` needs the lower-case key);
  - ``aiter_bytes()``: an async iterator of the body as it arrives, with any
    ``Content-Encoding`` (gzip...) already undone; ``aiter_raw()`` is used only when there is no
    ``aiter_bytes`` (httpx's raw bytes are still compressed);
  - ``async aclose()``: closes the response (its connection). It is awaited however the stream
    ends: the upstream finished, the client disconnected, or an error; at once for a ``HEAD``
    request (pass ``request=``), which streams nothing.

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
import codecs
import inspect
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from django.http import HttpRequest

from .protocol import Decoder, Event
from .sessions import UNSET, Session, SessionResponse, Unset
from .tasks import spawn

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
        if source is not None and session.method == "HEAD" and _is_upstream(source):
            # A HEAD response never streams, so nothing else would ever close the upstream.
            spawn(source.aclose())
        elif source is not None:
            session.on_start(self._produce)

    # -- automatic mode ------------------------------------------------------------------------

    def _items(self) -> AsyncIterator[Any]:
        source = self._source
        if _is_upstream(source):
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
        if callable(source) and not _is_upstream(source):
            result = source(self.stream)
            if inspect.isawaitable(result):
                await result
            return
        if self._source_iterator is None:
            self._source_iterator = self._items()
        try:
            if self._first is not _END and not await self._emit(self._first):
                return
            self._first = _END
            async for item in self._source_iterator:
                if not await self._emit(item):
                    return
        finally:
            # A producer cancelled while it waits in a send (the client left) is outside the
            # source: close the source now (an upstream's connection), not when it is collected.
            aclose = getattr(self._source_iterator, "aclose", None)
            if aclose is not None:
                await aclose()

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


def _is_upstream(source: Any) -> bool:
    """Whether ``source`` has the shape of a streamed HTTP response (module docstring)."""
    return (
        hasattr(source, "headers")
        and callable(getattr(source, "aclose", None))
        and callable(getattr(source, "aiter_bytes", None) or getattr(source, "aiter_raw", None))
    )


def _charset(content_type: str) -> str:
    """The charset a content type names, if Python knows it; else UTF-8."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                break
    return "utf-8"


async def _from_upstream(response: Any) -> AsyncIterator[Any]:
    """Events from a streamed upstream response; closes it however the stream ends."""
    try:
        content_type = str(response.headers.get("content-type") or "")
        aiter_body = getattr(response, "aiter_bytes", None) or response.aiter_raw
        if content_type.split(";")[0].strip().lower() == "text/event-stream":
            decoder = Decoder()
            async for chunk in aiter_body():
                for event in decoder.feed(chunk):
                    yield event
        else:
            text = codecs.getincrementaldecoder(_charset(content_type))(errors="replace")
            async for chunk in aiter_body():
                if data := text.decode(chunk):
                    yield data
            if data := text.decode(b"", final=True):
                yield data
    finally:
        await response.aclose()

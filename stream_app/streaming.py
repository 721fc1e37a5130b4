"""The HTTP side of a session: its ``StreamingHttpResponse`` and the SSE headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.http import StreamingHttpResponse

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SSE_HEADERS", "SessionResponse", "drop_connection"]

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx: do not buffer this response (proxy_buffering off for one location).
    "X-Accel-Buffering": "no",
    # Django's GZipMiddleware (and nginx's gzip) skip a response that already names an encoding;
    # Django has no other opt-out, and a compressor holds events back or splits them oddly.
    "Content-Encoding": "identity",
}


class _Body:
    """The response's ``streaming_content``: iterates the session's writer when Django streams.

    It has no ``close`` so that Django's ``response.close()`` (run when the hand-off path has
    already taken the stream over) never ends the session.
    """

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.session.writer()


class SessionResponse(StreamingHttpResponse):
    """The ``StreamingHttpResponse`` of a session: ``text/event-stream``, never buffered."""

    session: Session

    def __init__(self, session: Session, status: int, headers: dict[str, str] | None) -> None:
        merged = {**SSE_HEADERS, **(headers or {})}
        super().__init__(
            _Body(session),
            status=status,
            content_type="text/event-stream; charset=utf-8",
            headers=merged,
        )
        self.session = session

    def _set_streaming_content(self, value: Any) -> None:
        if isinstance(value, _Body):
            # Keep the body itself (an async iterable): the writer is created only if Django
            # streams this response, not for every response handed off to stream_app.asgi.
            self._iterator = value
            self.is_async = True
        else:
            super()._set_streaming_content(value)  # type: ignore[misc]


def drop_connection(send: Callable[..., Awaitable[None]]) -> None:
    """Drop the connection under an ASGI ``send`` at once, with the data it still buffers.

    Called when our writer was stuck in a write, that is when the peer stopped reading. Ending
    the response is not enough under uvicorn: it closes the transport gracefully, which waits
    to flush its buffer to the peer first, so a peer that never reads keeps the socket and the
    buffered chunk for good. ASGI has no message that aborts a connection; uvicorn's ``send`` is
    a method of its request cycle, whose ``transport`` attribute (uvicorn's own, not ASGI's:
    ``tests/test_stalled_clients.py`` fails if it goes) is an asyncio transport, with the public
    ``abort()``. Servers without one need nothing: daphne's writes never wait.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()

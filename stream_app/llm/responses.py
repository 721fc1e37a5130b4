"""Direct LLM streams: one request, one upstream call, one SSE response.

::

    async def chat(request):
        events = stream_chat(messages, raw=True)
        return await llm_response(request, events, format="openai")

The first event is read before the response starts, so an upstream that fails at once (HTTP
429, a bad key, an unreachable server) is answered with a JSON error and its HTTP status, not
with a ``200`` stream that holds one error event ("before the first byte, a status; after it,
an ``error`` event"). The upstream call lives exactly as long as the client: when the client
disconnects the stream's task is cancelled and the upstream response is closed.

For an answer that must survive a reload, use a generation (``stream_app.llm.generations``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse

from ..conf import app_settings
from ..sessions import Session, create_session
from .coalesce import aclose_iterator, coalesce
from .events import TERMINAL_EVENTS, Error, LLMEvent, RawChunk
from .formats import Format, Formatter, get_formatter

__all__ = ["llm_response", "pump"]


async def pump(
    session: Session,
    source: AsyncIterator[LLMEvent | RawChunk],
    formatter: Formatter,
    first: LLMEvent | RawChunk | None = None,
) -> None:
    """Write ``source`` to ``session`` in ``formatter``'s format until its terminal event.

    ``source`` is closed however this ends (the client left, the task was cancelled), which
    closes the upstream request. Sends wait for room in the session's queue: a slow client
    slows the read from upstream instead of growing a buffer.
    """
    try:
        for data, event in formatter.start():
            if not await session.send(data, event):
                return
        if first is not None and not await _emit(session, formatter, first):
            return
        async for item in source:
            if not await _emit(session, formatter, item):
                return
            if item.event in TERMINAL_EVENTS:
                return
    finally:
        await aclose_iterator(source)


async def _emit(session: Session, formatter: Formatter, item: LLMEvent | RawChunk) -> bool:
    for data, event in formatter.encode(item):
        if not await session.send(data, event):
            return False
    return True


async def llm_response(
    request: HttpRequest,
    events: AsyncIterator[LLMEvent | RawChunk],
    *,
    format: Format = "events",
    coalesce_ms: float | None = None,
    coalesce_chars: int | None = None,
    include_usage: bool = True,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    **session_options: Any,
) -> HttpResponseBase:
    """A streaming response of ``events`` (from ``stream_chat``) in ``format``.

    Coalescing defaults to ``LLM_COALESCE_MS`` / ``LLM_COALESCE_CHARS`` (off). For the
    ``openai`` format pass ``stream_chat(..., raw=True)``; ``include_usage`` says whether the
    client asked for the usage chunk. Other options go to ``create_session``.
    """
    formatter = get_formatter(format, include_usage=include_usage, message_id=message_id)
    source = coalesce(
        events,
        interval_ms=app_settings.LLM_COALESCE_MS if coalesce_ms is None else coalesce_ms,
        max_chars=app_settings.LLM_COALESCE_CHARS if coalesce_chars is None else coalesce_chars,
    )
    try:
        first: LLMEvent | RawChunk | None = await anext(source)
    except StopAsyncIteration:
        first = None
    except BaseException:
        # The client left while we waited for the upstream (the view was cancelled).
        await aclose_iterator(source)
        raise
    if isinstance(first, Error):
        await aclose_iterator(source)
        return JsonResponse(formatter.error_body(first), status=first.status)
    if request.method == "HEAD":
        await aclose_iterator(source)
    if not formatter.reconnects:
        # Fetch-based clients do not reconnect, and strict parsers (the openai SDK) read a
        # lone ``retry:`` field as an event with empty data.
        session_options.setdefault("retry", None)
    session = await create_session(
        request, headers={**formatter.headers, **(headers or {})}, **session_options
    )

    async def run(session: Session) -> None:
        await pump(session, source, formatter, first)

    session.on_start(run)
    return session.response

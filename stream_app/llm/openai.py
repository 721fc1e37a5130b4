"""The OpenAI adapter: an ``openai`` SDK chat-completion stream as ``stream_app.llm`` events.

``stream_chat(messages, ...)`` calls ``client.chat.completions.create(stream=True,
stream_options={"include_usage": True})`` and yields ``Token``, ``ToolCall``, ``Usage`` and one
final ``Done`` or ``Error`` (see ``stream_app.llm.events``). It never raises for an upstream
failure: every SDK exception becomes an ``Error`` with a stable code.

The upstream stream is held in ``async with``: closing the iterator (a client that left, a
cancelled generation) closes the upstream HTTP response at once, so the provider stops
generating, and billing, within milliseconds. A bare ``break`` out of the SDK's iterator would
leave it generating until garbage collection.

``get_client()`` builds the process's ``AsyncOpenAI`` from the settings: ``LLM_API_KEY`` /
``LLM_BASE_URL``, else the SDK's own ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` environment
variables, else the embedded offline model (``stream_app.llm.offline``).

This is the only module that imports ``openai``.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import httpx2
import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from ..conf import app_settings
from .errors import error_event, internal_error, parse_retry_after, status_error
from .events import Error, LLMEvent, RawChunk, StreamStats, Token, ToolCallAccumulator, Usage
from .offline import OFFLINE_BASE_URL, OfflineTransport

__all__ = [
    "ChunkTranslator",
    "client_config",
    "get_client",
    "is_offline",
    "map_error",
    "stream_chat",
]

_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[tuple[Any, ...], AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def client_config() -> tuple[str | None, str | None]:
    """The ``(api_key, base_url)`` in force; both None means the offline model."""
    api_key = app_settings.LLM_API_KEY or os.environ.get("OPENAI_API_KEY") or None
    base_url = app_settings.LLM_BASE_URL or os.environ.get("OPENAI_BASE_URL") or None
    return api_key, base_url


def is_offline() -> bool:
    """True when no model is configured and the embedded offline model answers."""
    api_key, base_url = client_config()
    return api_key is None and base_url is None


def get_client() -> AsyncOpenAI:
    """The ``AsyncOpenAI`` client of the running event loop, built from the settings.

    One client per loop: its connection pool belongs to that loop. It is rebuilt when the
    settings change (``override_settings`` in tests).
    """
    loop = asyncio.get_running_loop()
    api_key, base_url = client_config()
    timeout, retries = float(app_settings.LLM_TIMEOUT), int(app_settings.LLM_MAX_RETRIES)
    key = (api_key, base_url, timeout, retries, app_settings.LLM_OFFLINE_RATE)
    cached = _clients.get(loop)
    if cached is not None and cached[0] == key:
        return cached[1]
    if api_key is None and base_url is None:
        client = AsyncOpenAI(
            api_key="offline",
            base_url=OFFLINE_BASE_URL,
            max_retries=0,
            http_client=httpx2.AsyncClient(
                transport=OfflineTransport(rate=float(app_settings.LLM_OFFLINE_RATE))
            ),
        )
    else:
        # A local server (vLLM, Ollama, llama.cpp) needs no key, but the SDK insists on one.
        client = AsyncOpenAI(
            api_key=api_key or "none",
            base_url=base_url,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=retries,
        )
    _clients[loop] = (key, client)
    return client


def map_error(exc: BaseException) -> Error:
    """The ``Error`` event for an exception raised by the ``openai`` SDK."""
    if isinstance(exc, openai.APITimeoutError):
        return error_event("timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return error_event("upstream_unavailable", str(cause) if cause else exc.message)
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        retry_after = parse_retry_after(headers.get("retry-after"))
        milliseconds = parse_retry_after(headers.get("retry-after-ms"))
        if milliseconds is not None:
            retry_after = milliseconds / 1000
        return status_error(exc.status_code, exc.message, retry_after)
    if isinstance(exc, openai.APIError):
        # An error object in the middle of the stream (``data: {"error": ...}``).
        return error_event("upstream_error", exc.message)
    return internal_error(exc)


class ChunkTranslator:
    """Turns ``ChatCompletionChunk`` objects into events; keeps stats and tool calls.

    Only the first choice is streamed (``n=1``, what chat UIs use).
    """

    __slots__ = ("_current", "finish_reason", "stats", "tools", "usage")

    def __init__(self) -> None:
        self.stats = StreamStats()
        self.tools = ToolCallAccumulator()
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._current: int | None = None

    def feed(self, chunk: ChatCompletionChunk) -> list[LLMEvent]:
        """The events carried by one chunk, in order."""
        events: list[LLMEvent] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                self.stats.token()
                events.append(Token(delta.content))
            if delta.tool_calls:
                for call in delta.tool_calls:
                    if self._current is not None and call.index != self._current:
                        # Calls stream one after the other: a new index finishes the last one.
                        events.extend(self.tools.complete(self._current))
                    self._current = call.index
                    function = call.function
                    arguments = function.arguments if function is not None else None
                    name = function.name if function is not None else None
                    if arguments:
                        self.stats.token()
                    events.append(self.tools.feed(call.index, call.id, name, arguments))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
                events.extend(self.tools.complete())
        usage = chunk.usage
        if usage is not None:
            self.usage = Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
            events.append(self.usage)
        return events

    def finish(self) -> list[LLMEvent]:
        """The closing events: tool calls still open, then ``Done``."""
        return [*self.tools.complete(), self.stats.done(self.finish_reason, self.usage)]


async def stream_chat(
    messages: Iterable[dict[str, Any]],
    *,
    model: str | None = None,
    client: AsyncOpenAI | None = None,
    raw: bool = False,
    **params: Any,
) -> AsyncIterator[LLMEvent | RawChunk]:
    """Stream a chat completion as events, ending with exactly one ``Done`` or ``Error``.

    ``params`` go to ``chat.completions.create`` (``tools``, ``temperature``...). With
    ``raw=True`` each upstream chunk is also yielded, first, as a ``RawChunk`` (its JSON), for
    the OpenAI pass-through format.
    """
    client = client or get_client()
    translator = ChunkTranslator()
    options = {"include_usage": True, **(params.pop("stream_options", None) or {})}
    request: dict[str, Any] = {
        "model": model or app_settings.LLM_MODEL,
        "messages": list(messages),
        "stream": True,
        "stream_options": options,
        **params,
    }
    try:
        # A dict of options matches no single overload; the stream=True one is what we get.
        stream = cast(
            AsyncStream[ChatCompletionChunk], await client.chat.completions.create(**request)
        )
    except Exception as exc:
        yield map_error(exc)
        return
    try:
        async with stream:
            async for chunk in stream:
                if raw:
                    yield RawChunk(chunk.model_dump_json(exclude_unset=True), not chunk.choices)
                for event in translator.feed(chunk):
                    yield event
    except Exception as exc:
        yield map_error(exc)
        return
    for event in translator.finish():
        yield event

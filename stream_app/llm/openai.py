"""The OpenAI adapter: an ``openai`` chat-completion stream as ``stream_app.llm`` events.

``stream_chat(messages, ...)`` asks ``client.chat.completions`` for a stream
(``stream=True, stream_options={"include_usage": True}``) and yields ``Token``, ``ToolCall``,
``Usage`` and one final ``Done`` or ``Error`` (see ``stream_app.llm.events``). It never raises
for an upstream failure: SDK exceptions, HTTP errors, read timeouts, cut connections and
``data: {"error": ...}`` mid-stream all become an ``Error`` with a stable code.

The SDK sends the request (auth, base URL, retries, status errors) and the SSE answer is parsed
here from its bytes; ``adapt_stream(stream)`` does the same for an ``AsyncStream`` of the SDK's
chunk objects that you created yourself.

The upstream response is held in ``async with``: closing the iterator (a client that left, a
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
import json
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from ..extras import MissingExtra

try:
    import httpx2
    import openai
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.chat import ChatCompletionChunk
except ImportError as exc:
    raise MissingExtra("llm", "stream_app.llm.openai (stream_chat)") from exc

from ..conf import app_settings
from ..protocol import Decoder
from .errors import error_event, internal_error, parse_retry_after, status_error
from .events import Error, LLMEvent, RawChunk, StreamStats, Token, ToolCallAccumulator, Usage
from .offline import OFFLINE_BASE_URL, OfflineTransport

__all__ = [
    "ChatStream",
    "ChunkTranslator",
    "adapt_stream",
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
    """Turns chat-completion chunks (JSON dicts, or the SDK's objects) into events.

    Keeps the stream's stats and merges tool calls. Only the first choice is streamed (``n=1``,
    what chat UIs use).
    """

    __slots__ = ("_current", "finish_reason", "stats", "tools", "usage")

    def __init__(self) -> None:
        self.stats = StreamStats()
        self.tools = ToolCallAccumulator()
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._current: int | None = None

    def feed_dict(self, chunk: dict[str, Any]) -> list[LLMEvent]:
        """The events carried by one chunk parsed from JSON, in order."""
        events: list[LLMEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.stats.token()
                events.append(Token(content))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                self._tool(
                    events,
                    call.get("index", 0),
                    call.get("id"),
                    function.get("name"),
                    function.get("arguments"),
                )
            if choice.get("finish_reason"):
                self._finish(events, choice["finish_reason"])
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage(
                usage.get("prompt_tokens") or 0,
                usage.get("completion_tokens") or 0,
                usage.get("total_tokens") or 0,
            )
            events.append(self.usage)
        return events

    def feed(self, chunk: ChatCompletionChunk) -> list[LLMEvent]:
        """The events carried by one of the SDK's ``ChatCompletionChunk`` objects, in order."""
        events: list[LLMEvent] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                self.stats.token()
                events.append(Token(delta.content))
            for call in delta.tool_calls or ():
                function = call.function
                name = function.name if function is not None else None
                arguments = function.arguments if function is not None else None
                self._tool(events, call.index, call.id, name, arguments)
            if choice.finish_reason:
                self._finish(events, choice.finish_reason)
        usage = chunk.usage
        if usage is not None:
            self.usage = Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
            events.append(self.usage)
        return events

    def _tool(
        self,
        events: list[LLMEvent],
        index: int,
        id: str | None,
        name: str | None,
        arguments: str | None,
    ) -> None:
        if self._current is not None and index != self._current:
            # Calls stream one after the other: a new index finishes the last one.
            events.extend(self.tools.complete(self._current))
        self._current = index
        if arguments:
            self.stats.token()
        events.append(self.tools.feed(index, id, name, arguments))

    def _finish(self, events: list[LLMEvent], reason: str) -> None:
        self.finish_reason = reason
        events.extend(self.tools.complete())

    def finish(self) -> list[LLMEvent]:
        """The closing events: tool calls still open, then ``Done``."""
        return [*self.tools.complete(), self.stats.done(self.finish_reason, self.usage)]


class ChatStream(AsyncIterator[LLMEvent | RawChunk]):
    """The events of one ``stream_chat`` call, and the request that produced them.

    ``request`` (``{"messages", "model", "params"}``) is what a generation stores so that
    another worker can rerun it as a continuation (``stream_app.llm.takeover``); it is None
    when the call cannot be rebuilt elsewhere: a client of your own, or arguments that are
    not JSON.
    """

    __slots__ = ("_events", "request")

    def __init__(
        self, events: AsyncGenerator[LLMEvent | RawChunk, None], request: dict[str, Any] | None
    ) -> None:
        self._events = events
        self.request = request

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> LLMEvent | RawChunk:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Close the upstream response (at once, even mid-answer)."""
        await self._events.aclose()


def stream_chat(
    messages: Iterable[dict[str, Any]],
    *,
    model: str | None = None,
    client: AsyncOpenAI | None = None,
    raw: bool = False,
    **params: Any,
) -> ChatStream:
    """Stream a chat completion as events, ending with exactly one ``Done`` or ``Error``.

    ``params`` go to ``chat.completions.create`` (``tools``, ``temperature``...). With
    ``raw=True`` each upstream chunk is also yielded, first, as a ``RawChunk`` (its JSON text
    as received), for the OpenAI pass-through format.

    The SDK sends the request (auth, base URL, retries, HTTP errors as its exceptions) and the
    answer's SSE bytes are read here with ``stream_app.protocol.Decoder`` and ``json.loads``:
    building the SDK's pydantic chunk objects took about 70% of the CPU of a stream. Use
    ``adapt_stream`` to turn an SDK stream you already have into events.
    """
    messages = list(messages)
    model = model or app_settings.LLM_MODEL
    rerun: dict[str, Any] | None = None
    if client is None:
        rerun = {"messages": messages, "model": model, "params": params}
        try:
            json.dumps(rerun)
        except (TypeError, ValueError):
            rerun = None
    return ChatStream(_stream_chat(messages, model, client, raw, dict(params)), rerun)


async def _stream_chat(
    messages: list[dict[str, Any]],
    model: str,
    client: AsyncOpenAI | None,
    raw: bool,
    params: dict[str, Any],
) -> AsyncGenerator[LLMEvent | RawChunk, None]:
    client = client or get_client()
    translator = ChunkTranslator()
    options = {"include_usage": True, **(params.pop("stream_options", None) or {})}
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": options,
        **params,
    }
    try:
        opened = client.chat.completions.with_streaming_response.create(**request)
        async with opened as response:
            decoder = Decoder()
            async for data in response.http_response.aiter_bytes():
                for sse in decoder.feed(data):
                    text = sse.data or ""
                    if text.startswith("[DONE]"):
                        for event in translator.finish():
                            yield event
                        return
                    chunk = json.loads(text)
                    if not isinstance(chunk, dict):
                        raise ValueError("a chunk is not a JSON object")
                    error = chunk.get("error")
                    if error:
                        # OpenAI's mid-stream failure: ``data: {"error": {...}}``.
                        detail = error.get("message") if isinstance(error, dict) else None
                        yield error_event("upstream_error", str(detail or error))
                        return
                    if raw:
                        yield RawChunk(text, not chunk.get("choices"))
                    for event in translator.feed_dict(chunk):
                        yield event
    except httpx2.TimeoutException:
        yield error_event("timeout")
        return
    except httpx2.TransportError as exc:
        yield error_event("upstream_unavailable", f"{type(exc).__name__}: {exc}")
        return
    except ValueError as exc:
        yield error_event("upstream_error", f"malformed chunk: {exc}")
        return
    except Exception as exc:
        yield map_error(exc)
        return
    if translator.finish_reason is not None:
        # Some OpenAI-compatible servers end without ``[DONE]``; a finish reason is enough.
        for event in translator.finish():
            yield event
        return
    yield error_event("upstream_unavailable", "the stream ended before the answer did")


async def adapt_stream(
    stream: AsyncStream[ChatCompletionChunk], *, raw: bool = False
) -> AsyncIterator[LLMEvent | RawChunk]:
    """Events from an SDK stream you created (``create(stream=True, ...)``); closes it.

    Timings are measured from the call to this function, not from the request.
    """
    translator = ChunkTranslator()
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

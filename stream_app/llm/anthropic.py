"""The Anthropic adapter: a Messages API stream as the same ``stream_app.llm`` events.

Optional: needs the ``anthropic`` SDK (``pip install 'django-stream-llm[anthropic]'``);
importing this module without it raises ``stream_app.extras.MissingExtra``, an ImportError
naming the extra. ``stream_anthropic(messages, model=...)`` yields ``Token``, ``ToolCall``
(``tool_use`` blocks, their ``input_json_delta`` merged), ``Usage`` and one final ``Done`` or
``Error``, exactly like ``stream_app.llm.openai.stream_chat``, so every format, coalescing and
generations work unchanged. Finish reasons are Anthropic's (``end_turn``, ``max_tokens``,
``tool_use``...).

As with OpenAI the upstream stream is held in ``async with``: closing the iterator closes it.
This is the only module that imports ``anthropic``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from ..extras import MissingExtra

try:
    import anthropic
    from anthropic import AsyncAnthropic, AsyncStream
    from anthropic.types import (
        InputJSONDelta,
        RawContentBlockDeltaEvent,
        RawContentBlockStartEvent,
        RawContentBlockStopEvent,
        RawMessageDeltaEvent,
        RawMessageStartEvent,
        RawMessageStreamEvent,
        TextDelta,
        ToolUseBlock,
    )
except ImportError as exc:
    raise MissingExtra("anthropic", "stream_app.llm.anthropic (stream_anthropic)") from exc

from .errors import error_event, internal_error, parse_retry_after, status_error
from .events import Error, LLMEvent, StreamStats, Token, ToolCallAccumulator, Usage

__all__ = ["get_anthropic_client", "map_anthropic_error", "stream_anthropic"]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncAnthropic] = (
    weakref.WeakKeyDictionary()
)
# Error types Anthropic sends in an ``event: error`` mid-stream (HTTP status already 200).
_STREAM_ERROR_CODES = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "upstream_error",
    "api_error": "upstream_error",
    "timeout_error": "timeout",
    "authentication_error": "upstream_auth",
    "permission_error": "upstream_auth",
    "invalid_request_error": "bad_request",
}


def get_anthropic_client() -> AsyncAnthropic:
    """The ``AsyncAnthropic`` client of the running loop (``ANTHROPIC_API_KEY`` from the env)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = AsyncAnthropic(max_retries=0)
    return client


def map_anthropic_error(exc: BaseException) -> Error:
    """The ``Error`` event for an exception raised by the ``anthropic`` SDK."""
    if isinstance(exc, anthropic.APITimeoutError):
        return error_event("timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        return error_event("upstream_unavailable", str(cause) if cause else exc.message)
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code < 400:
            # An ``event: error`` in the middle of a 200 stream.
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error") if isinstance(body.get("error"), dict) else body
            kind = error.get("type") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            code = _STREAM_ERROR_CODES.get(str(kind), "upstream_error")
            return error_event(code, message if isinstance(message, str) else exc.message)
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return status_error(exc.status_code, exc.message, retry_after)
    if isinstance(exc, anthropic.APIError):
        return error_event("upstream_error", exc.message)
    return internal_error(exc)


async def stream_anthropic(
    messages: Iterable[dict[str, Any]],
    *,
    model: str,
    max_tokens: int = 1024,
    client: AsyncAnthropic | None = None,
    **params: Any,
) -> AsyncIterator[LLMEvent]:
    """Stream a Messages API answer as events, ending with exactly one ``Done`` or ``Error``.

    ``params`` go to ``messages.create`` (``system``, ``tools``, ``temperature``...).
    """
    client = client or get_anthropic_client()
    stats = StreamStats()
    tools = ToolCallAccumulator()
    # Content block index -> tool call ordinal (tool calls are numbered 0, 1... like OpenAI's).
    tool_blocks: dict[int, int] = {}
    input_tokens = output_tokens = 0
    finish_reason: str | None = None
    request: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "stream": True,
        **params,
    }
    try:
        # A dict of options matches no single overload; the stream=True one is what we get.
        stream = cast(AsyncStream[RawMessageStreamEvent], await client.messages.create(**request))
    except Exception as exc:
        yield map_anthropic_error(exc)
        return
    try:
        async with stream:
            async for event in stream:
                if isinstance(event, RawMessageStartEvent):
                    input_tokens = event.message.usage.input_tokens
                    output_tokens = event.message.usage.output_tokens
                elif isinstance(event, RawContentBlockStartEvent):
                    block = event.content_block
                    if isinstance(block, ToolUseBlock):
                        ordinal = tool_blocks[event.index] = len(tool_blocks)
                        yield tools.feed(ordinal, block.id, block.name, None)
                elif isinstance(event, RawContentBlockDeltaEvent):
                    delta = event.delta
                    if isinstance(delta, TextDelta) and delta.text:
                        stats.token()
                        yield Token(delta.text)
                    elif isinstance(delta, InputJSONDelta) and event.index in tool_blocks:
                        if delta.partial_json:
                            stats.token()
                        yield tools.feed(tool_blocks[event.index], None, None, delta.partial_json)
                elif isinstance(event, RawContentBlockStopEvent):
                    if event.index in tool_blocks:
                        for call in tools.complete(tool_blocks[event.index]):
                            yield call
                elif isinstance(event, RawMessageDeltaEvent):
                    finish_reason = event.delta.stop_reason
                    output_tokens = event.usage.output_tokens
    except Exception as exc:
        yield map_anthropic_error(exc)
        return
    usage = Usage(input_tokens, output_tokens, input_tokens + output_tokens)
    yield usage
    for call in tools.complete():
        yield call
    yield stats.done(finish_reason, usage)

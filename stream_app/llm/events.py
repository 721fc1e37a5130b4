"""The events an LLM stream becomes, whatever the provider: pure data, no I/O.

Every adapter (``stream_app.llm.openai``, ``stream_app.llm.anthropic``) turns its SDK's stream
into the same sequence::

    token* tool_call* usage? (done | error)

- ``token``: a text delta, ``{"text": "..."}``.
- ``tool_call``: a tool call as it grows, ``{"index", "id", "name", "arguments", "delta",
  "complete"}``; deltas are merged per ``index``, and each call is sent once more with
  ``complete: true`` when the model has finished it.
- ``usage``: token counts, ``{"prompt_tokens", "completion_tokens", "total_tokens"}``.
- ``done``: the end, ``{"finish_reason", "usage", "ttft_ms", "tokens_per_second", "tokens",
  "duration_ms"}``; ``finish_reason`` is the provider's, or ``"cancelled"``.
- ``error``: the end after a failure, ``{"code", "message", ...}`` (see ``stream_app.llm.errors``).

Exactly one of ``done`` or ``error`` ends every stream, so a client can always tell a finished
answer from a cut connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "TERMINAL_EVENTS",
    "Done",
    "Error",
    "LLMEvent",
    "RawChunk",
    "StreamStats",
    "Token",
    "ToolCall",
    "ToolCallAccumulator",
    "Usage",
]

#: Event types that end a stream.
TERMINAL_EVENTS = frozenset({"done", "error"})


@dataclass(frozen=True, slots=True)
class Token:
    """A text delta."""

    event: ClassVar[str] = "token"
    text: str

    def payload(self) -> dict[str, Any]:
        """The JSON body of the ``token`` event."""
        return {"text": self.text}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as merged so far (``complete`` once the model has finished it)."""

    event: ClassVar[str] = "tool_call"
    index: int
    id: str | None
    name: str
    arguments: str
    delta: str = ""
    complete: bool = False

    def payload(self) -> dict[str, Any]:
        """The JSON body of the ``tool_call`` event."""
        return {
            "index": self.index,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "delta": self.delta,
            "complete": self.complete,
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported by the provider."""

    event: ClassVar[str] = "usage"
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def payload(self) -> dict[str, Any]:
        """The JSON body of the ``usage`` event."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Done:
    """The stream finished; timings measured from the upstream request."""

    event: ClassVar[str] = "done"
    finish_reason: str | None
    usage: Usage | None = None
    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    tokens: int = 0
    duration_ms: float = 0.0

    def payload(self) -> dict[str, Any]:
        """The JSON body of the ``done`` event."""
        return {
            "finish_reason": self.finish_reason,
            "usage": self.usage.payload() if self.usage is not None else None,
            "ttft_ms": self.ttft_ms,
            "tokens_per_second": self.tokens_per_second,
            "tokens": self.tokens,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class Error:
    """The stream failed; ``code`` is stable (see ``stream_app.llm.errors``)."""

    event: ClassVar[str] = "error"
    code: str
    message: str
    status: int = 502
    retry_after: float | None = None
    upstream_status: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON body of the ``error`` event (and of a JSON error response)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.upstream_status is not None:
            body["upstream_status"] = self.upstream_status
        return body


@dataclass(frozen=True, slots=True)
class RawChunk:
    """One upstream chunk as JSON text, for the OpenAI pass-through format only."""

    event: ClassVar[str] = "chunk"
    json: str
    usage_only: bool = False

    def payload(self) -> str:
        """The chunk's JSON text."""
        return self.json


LLMEvent = Token | ToolCall | Usage | Done | Error


@dataclass(slots=True)
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    complete: bool = False


class ToolCallAccumulator:
    """Merges streamed tool-call deltas per ``index`` into name and arguments."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def feed(self, index: int, id: str | None, name: str | None, arguments: str | None) -> ToolCall:
        """Merge one delta and return the call as it stands."""
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _PartialCall()
        if id:
            call.id = id
        if name:
            # Providers send the name once; a few OpenAI-compatible servers split it.
            call.name += name
        if arguments:
            call.arguments.append(arguments)
        return ToolCall(index, call.id, call.name, "".join(call.arguments), arguments or "")

    def complete(self, index: int | None = None) -> list[ToolCall]:
        """Mark one call (or every open call) complete; returns them, in index order."""
        finished = []
        for key in sorted(self._calls):
            call = self._calls[key]
            if call.complete or (index is not None and key != index):
                continue
            call.complete = True
            finished.append(ToolCall(key, call.id, call.name, "".join(call.arguments), "", True))
        return finished

    def __len__(self) -> int:
        return len(self._calls)


class StreamStats:
    """Time to first token and throughput of one stream (``time.perf_counter`` based)."""

    __slots__ = ("first_token_at", "started_at", "tokens")

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.tokens = 0

    def token(self) -> None:
        """Count one content delta (text or tool-call arguments)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.tokens += 1

    def done(self, finish_reason: str | None, usage: Usage | None) -> Done:
        """The ``done`` event: provider token counts when given, else counted deltas."""
        now = time.perf_counter()
        first = self.first_token_at
        tokens = usage.completion_tokens if usage is not None else self.tokens
        rate = None
        if first is not None and tokens > 1:
            # Throughput of the generation phase: tokens after the first over the time since
            # it (the first token's wait is TTFT, not speed).
            elapsed = now - first
            rate = round((tokens - 1) / elapsed, 1) if elapsed > 0.001 else None
        return Done(
            finish_reason=finish_reason,
            usage=usage,
            ttft_ms=round((first - self.started_at) * 1000, 1) if first is not None else None,
            tokens_per_second=rate,
            tokens=tokens,
            duration_ms=round((now - self.started_at) * 1000, 1),
        )

"""Output formats: the same LLM events written three ways.

- ``events`` (default): our named events, ``event: token`` / ``tool_call`` / ``usage`` /
  ``done`` / ``error`` with a JSON body (see ``stream_app.llm.events``). What ``EventSource``
  and ``stream_app/stream.js`` consume, and the only format a generation can resume.
- ``openai``: the OpenAI wire format passed through, ``data: {chat.completion.chunk}`` ...
  ``data: [DONE]``, so any OpenAI-compatible client (the ``openai`` SDK itself) can consume
  the endpoint. A failure mid-stream is ``data: {"error": {...}}``, which the SDK raises as
  ``APIError``; the usage chunk is sent only to a client that asked for it.
- ``vercel``: the Vercel AI SDK UI message stream, protocol v1 (header
  ``x-vercel-ai-ui-message-stream: v1``): ``start``, ``start-step``, ``text-start`` /
  ``text-delta`` / ``text-end``, ``tool-input-start`` / ``tool-input-delta`` /
  ``tool-input-available``, ``error``, ``finish-step``, ``finish``, then ``data: [DONE]``, so
  ``useChat`` works against it. Finish reason, usage and timings travel in the ``finish``
  part's ``messageMetadata`` (AI SDK 5 validates ``finish`` strictly and has no other field).

A formatter turns one event into ``(data, event_type)`` pairs for ``Session.push``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from .events import Done, Error, LLMEvent, RawChunk, Token, ToolCall

__all__ = [
    "FORMATS",
    "EventsFormatter",
    "Format",
    "Formatter",
    "OpenAIFormatter",
    "VercelFormatter",
    "get_formatter",
]

Format = Literal["events", "openai", "vercel"]
FORMATS: tuple[Format, ...] = ("events", "openai", "vercel")
Frame = tuple[Any, str | None]


class Formatter:
    """Writes events in one format; ``start`` and the terminal event frame the stream."""

    #: Extra response headers of the format.
    headers: dict[str, str] = {}
    #: Whether the formatter needs the upstream's raw chunks (``stream_chat(raw=True)``).
    raw = False
    #: Whether a ``retry:`` field may be sent (clients that parse strictly choke on it).
    reconnects = True

    def start(self) -> list[Frame]:
        """Frames before the first event."""
        return []

    def encode(self, event: LLMEvent | RawChunk) -> list[Frame]:  # pragma: no cover
        """The frames for one event."""
        raise NotImplementedError

    def error_body(self, error: Error) -> dict[str, Any]:
        """The JSON body of an HTTP error response sent before the stream starts."""
        return {"error": error.code, **error.payload()}


class EventsFormatter(Formatter):
    """Our named events."""

    def encode(self, event: LLMEvent | RawChunk) -> list[Frame]:
        """One named event; raw chunks are dropped."""
        if isinstance(event, RawChunk):
            return []
        return [(event.payload(), event.event)]


class OpenAIFormatter(Formatter):
    """The OpenAI chat-completion chunk stream, passed through."""

    raw = True
    reconnects = False

    def __init__(self, include_usage: bool = True) -> None:
        self.include_usage = include_usage

    def encode(self, event: LLMEvent | RawChunk) -> list[Frame]:
        """Raw chunks as they came; ``[DONE]`` after ``Done``; an error object on failure."""
        if isinstance(event, RawChunk):
            if event.usage_only and not self.include_usage:
                return []
            return [(event.json, None)]
        if isinstance(event, Done):
            return [("[DONE]", None)]
        if isinstance(event, Error):
            return [(self.error_body(event), None)]
        return []

    def error_body(self, error: Error) -> dict[str, Any]:
        """OpenAI's error object: ``{"error": {"message", "type", "code"}}``."""
        return {"error": {"message": error.message, "type": error.code, "code": error.code}}


_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool-calls",
    "stop_sequence": "stop",
}


class VercelFormatter(Formatter):
    """The Vercel AI SDK UI message stream (v1)."""

    headers = {"x-vercel-ai-ui-message-stream": "v1"}
    reconnects = False

    def __init__(self, message_id: str | None = None) -> None:
        self.message_id = message_id or f"msg-{uuid.uuid4().hex}"
        self._text_id: str | None = None
        self._texts = 0
        self._tools: set[str] = set()

    def start(self) -> list[Frame]:
        """``start`` (with the message id) and ``start-step``."""
        return [
            ({"type": "start", "messageId": self.message_id}, None),
            ({"type": "start-step"}, None),
        ]

    def _end_text(self) -> list[Frame]:
        if self._text_id is None:
            return []
        text_id, self._text_id = self._text_id, None
        return [({"type": "text-end", "id": text_id}, None)]

    def encode(self, event: LLMEvent | RawChunk) -> list[Frame]:
        """The UI message chunks for one event."""
        if isinstance(event, Token):
            frames: list[Frame] = []
            if self._text_id is None:
                self._texts += 1
                self._text_id = f"text-{self._texts}"
                frames.append(({"type": "text-start", "id": self._text_id}, None))
            frames.append(({"type": "text-delta", "id": self._text_id, "delta": event.text}, None))
            return frames
        if isinstance(event, ToolCall):
            return self._tool(event)
        if isinstance(event, Done):
            metadata = {
                "finishReason": _FINISH_REASONS.get(event.finish_reason or "", "other"),
                "usage": event.usage.payload() if event.usage is not None else None,
                "ttftMs": event.ttft_ms,
                "tokensPerSecond": event.tokens_per_second,
            }
            return [
                *self._end_text(),
                ({"type": "finish-step"}, None),
                ({"type": "finish", "messageMetadata": metadata}, None),
                ("[DONE]", None),
            ]
        if isinstance(event, Error):
            return [
                *self._end_text(),
                ({"type": "error", "errorText": event.message}, None),
                ({"type": "finish-step"}, None),
                ({"type": "finish", "messageMetadata": {"finishReason": "error"}}, None),
                ("[DONE]", None),
            ]
        return []

    def _tool(self, call: ToolCall) -> list[Frame]:
        frames = self._end_text()
        call_id = call.id or f"call-{call.index}"
        if call_id not in self._tools and call.name:
            self._tools.add(call_id)
            frames.append(
                ({"type": "tool-input-start", "toolCallId": call_id, "toolName": call.name}, None)
            )
        if call.delta and call_id in self._tools:
            frames.append(
                (
                    {
                        "type": "tool-input-delta",
                        "toolCallId": call_id,
                        "inputTextDelta": call.delta,
                    },
                    None,
                )
            )
        if call.complete:
            try:
                value = json.loads(call.arguments or "{}")
            except ValueError:
                frames.append(
                    (
                        {
                            "type": "tool-input-error",
                            "toolCallId": call_id,
                            "toolName": call.name,
                            "input": call.arguments,
                            "errorText": "the model's tool arguments are not valid JSON",
                        },
                        None,
                    )
                )
            else:
                frames.append(
                    (
                        {
                            "type": "tool-input-available",
                            "toolCallId": call_id,
                            "toolName": call.name,
                            "input": value,
                        },
                        None,
                    )
                )
        return frames

    def error_body(self, error: Error) -> dict[str, Any]:
        """``{"error": code, "message": ...}`` (``useChat`` shows the response text)."""
        return {"error": error.code, **error.payload()}


def get_formatter(
    format: Format, *, include_usage: bool = True, message_id: str | None = None
) -> Formatter:
    """A fresh formatter for ``format`` (``events``, ``openai`` or ``vercel``)."""
    if format == "events":
        return EventsFormatter()
    if format == "openai":
        return OpenAIFormatter(include_usage)
    if format == "vercel":
        return VercelFormatter(message_id)
    raise ValueError(f"unknown LLM stream format {format!r}: use one of {', '.join(FORMATS)}")

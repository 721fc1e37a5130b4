"""OpenAI-compatible and Vercel AI SDK endpoints over the same model: direct streams.

- ``POST /v1/chat/completions``: the OpenAI chat-completions API, streamed in the OpenAI wire
  format, so the ``openai`` SDK (or any compatible client) can use this server as its
  ``base_url``. Bearer token ``CHAT_API_TOKEN`` (the endpoint is off without one).
- ``POST /api/chat``: the Vercel AI SDK ``useChat`` endpoint (UI message stream v1). Same-origin
  pages send the CSRF token; other clients the bearer token.
- ``POST /api/stream`` ``{"messages": [...]}``: the answer as our named events (``token``,
  ``tool_call``, ``usage``, ``done``, ``error``), the simplest direct stream. Same access rule.

Both are direct streams: the upstream call lives as long as the client's connection.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from stream_app.conf import app_settings
from stream_app.llm.openai import stream_chat
from stream_app.llm.responses import llm_response
from stream_app.permissions import bearer_matches, csrf_passes
from stream_app.requests import BodyError, read_json, require_json

from .views import error

__all__ = ["events_stream", "openai_chat_completions", "vercel_chat"]

# Request fields passed through to the upstream (the rest are ours or not supported).
PASS_THROUGH = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "user",
}
MAX_BODY = 1_000_000


def _json_body(request: HttpRequest) -> tuple[dict[str, Any] | None, HttpResponse | None]:
    try:
        body = read_json(request, max_bytes=MAX_BODY)
    except BodyError as exc:
        return None, exc.response()
    if not isinstance(body, dict):
        return None, error(400, "invalid_request", "send a JSON object")
    return body, None


def _valid_messages(messages: Any) -> bool:
    if not isinstance(messages, list) or not messages or len(messages) > 200:
        return False
    return all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool")
        for m in messages
    )


@csrf_exempt
async def openai_chat_completions(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/chat/completions`` with ``stream: true``, answered in the OpenAI format."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "POST a chat completion request")
    if not bearer_matches(request, getattr(settings, "CHAT_API_TOKEN", None)):
        return error(401, "unauthorized", "send Authorization: Bearer <CHAT_API_TOKEN>")
    body, refused = _json_body(request)
    if refused is not None:
        return refused
    assert body is not None
    if not _valid_messages(body.get("messages")):
        return error(400, "invalid_messages", "'messages' must be a list of chat messages")
    if body.get("stream") is not True:
        return error(400, "stream_required", "this endpoint streams: set 'stream': true")
    params = {key: body[key] for key in PASS_THROUGH if key in body}
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    model = body.get("model") if isinstance(body.get("model"), str) else None
    events = stream_chat(
        body["messages"], model=model or app_settings.LLM_MODEL, raw=True, **params
    )
    return await llm_response(request, events, format="openai", include_usage=include_usage)


def _ui_messages(messages: Any) -> list[dict[str, str]] | None:
    """OpenAI messages from the AI SDK's UI messages (``parts``) or plain ``content``."""
    if not isinstance(messages, list) or not messages or len(messages) > 200:
        return None
    converted = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            return None
        parts = message.get("parts")
        if isinstance(parts, list):
            text = "".join(
                p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
            )
        elif isinstance(message.get("content"), str):
            text = message["content"]
        else:
            return None
        if len(text) > app_settings.CHAT_MAX_LENGTH * 4:
            return None
        converted.append({"role": message["role"], "content": text})
    return converted


def _page_or_token(request: HttpRequest) -> HttpResponse | None:
    """None if the request has the bearer token or passes Django's CSRF check (a page)."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "POST the chat's messages")
    try:
        # Before the CSRF check, which would parse a form body.
        require_json(request)
    except BodyError as exc:
        return exc.response()
    if bearer_matches(request, getattr(settings, "CHAT_API_TOKEN", None)):
        return None
    if not csrf_passes(request):
        return error(403, "csrf_failed", "CSRF verification failed")
    return None


def _chat_request(request: HttpRequest) -> tuple[dict[str, Any], list[Any]] | HttpResponseBase:
    """The JSON body and its messages, or the error response that refuses the request."""
    refused = _page_or_token(request)
    if refused is not None:
        return refused
    body, refused = _json_body(request)
    if refused is not None:
        return refused
    assert body is not None
    messages = _ui_messages(body.get("messages"))
    if messages is None:
        return error(400, "invalid_messages", "'messages' must be a list of chat messages")
    return body, messages


@csrf_exempt
async def vercel_chat(request: HttpRequest) -> HttpResponseBase:
    """``POST /api/chat`` for ``useChat``: the answer as a UI message stream (v1)."""
    parsed = _chat_request(request)
    if isinstance(parsed, HttpResponseBase):
        return parsed
    body, messages = parsed
    message_id = body.get("messageId") if isinstance(body.get("messageId"), str) else None
    return await llm_response(
        request, stream_chat(messages), format="vercel", message_id=message_id
    )


@csrf_exempt
async def events_stream(request: HttpRequest) -> HttpResponseBase:
    """``POST /api/stream``: the answer as our named events, tied to this connection."""
    parsed = _chat_request(request)
    if isinstance(parsed, HttpResponseBase):
        return parsed
    body, messages = parsed
    params = {key: body[key] for key in ("tools", "tool_choice") if key in body}
    return await llm_response(request, stream_chat(messages, **params))

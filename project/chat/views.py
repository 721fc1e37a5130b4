"""The chat page, and the endpoint that starts an answer and streams it.

- ``GET /``: the page, with the owner's conversation (saved in the database).
- ``POST /chat/send/`` ``{"message": "..."}`` (JSON, CSRF protected): saves the question,
  starts a generation and streams it (named events; the first, ``generation``, says where to
  resume and how to cancel). Errors before the stream are 400/409 JSON.
- ``POST /chat/new/``: start a new conversation.

Generations are tied to their owner: the user, or the anonymous visitor's session.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse

from stream_app.conf import app_settings
from stream_app.llm.generations import create_generation
from stream_app.llm.openai import is_offline, stream_chat
from stream_app.llm.views import generation_urls, request_owner, stream_generation
from stream_app.requests import BodyError, read_json

from .history import (
    current_conversation,
    message_json,
    prompt_messages,
    reconcile,
    save_answer,
    still_streaming,
)
from .models import Conversation, Message

__all__ = ["csrf_failure", "error", "index", "new_conversation", "parse_message", "send"]


def error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    """``{"error": code, "message": message}`` with ``status``."""
    return JsonResponse({"error": code, "message": message, **extra}, status=status)


def model_name() -> str:
    """The model the demo asks (``OPENAI_MODEL``), or ``offline``."""
    return "offline" if is_offline() else str(app_settings.LLM_MODEL)


async def index(request: HttpRequest) -> HttpResponse:
    """The chat page."""
    # The template reads request.user (the notification UI), whose lazy load queries the
    # database: load it here, where async code can, or a logged-in visitor gets a 500.
    request.user = await request.auser()
    owner = await request_owner(request)
    history: list[dict[str, Any]] = []
    if owner is not None:
        conversation = await current_conversation(owner)
        if conversation is not None:
            async for message in conversation.messages.all():
                message = await reconcile(message)
                stream_url = None
                if message.status == Message.Status.STREAMING:
                    stream_url = generation_urls(message.generation_id)["stream_url"]
                history.append(message_json(message, stream_url))
    config = {
        "send_url": reverse("chat-send"),
        "new_url": reverse("chat-new"),
        "csrf_token": get_token(request),
        "max_length": app_settings.CHAT_MAX_LENGTH,
        "model": model_name(),
        "offline": is_offline(),
    }
    # The page's {% notifications_ui %} renders for this user: awaited here, since reading
    # request.user in an async view would query the database synchronously.
    user = await request.auser()
    context = {"history": history, "config": config, "offline": is_offline(), "user": user}
    return render(request, "chat/index.html", context)


def parse_message(request: HttpRequest) -> tuple[str | None, JsonResponse | None]:
    """The user's message from a JSON body, or the 4xx response that refuses it."""
    try:
        # Room for every character as a \u escape pair, and for the field names.
        body = read_json(request, max_bytes=app_settings.CHAT_MAX_LENGTH * 12 + 1024)
    except BodyError as exc:
        return None, exc.response()
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return None, error(400, "invalid_request", 'send a JSON object: {"message": "..."}')
    unknown = set(body) - {"message"}
    if unknown:
        return None, error(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    text = body["message"].strip()
    if not text:
        return None, error(400, "empty_message", "the message is empty")
    limit = app_settings.CHAT_MAX_LENGTH
    if len(text) > limit:
        return None, error(
            400, "message_too_long", f"messages are limited to {limit} characters", limit=limit
        )
    return text, None


async def send(request: HttpRequest) -> HttpResponseBase:
    """Save the question, start the answer's generation and stream it."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "POST a JSON object")
    text, refused = parse_message(request)
    if refused is not None:
        return refused
    assert text is not None
    owner = await request_owner(request, create=True)
    assert owner is not None
    conversation = await current_conversation(owner, create=True)
    assert conversation is not None
    running = await conversation.messages.filter(status=Message.Status.STREAMING).alast()
    if running is not None:
        # An answer whose worker died is continued (taken over), and so still being written.
        if await still_streaming(running.generation_id):
            return error(
                409, "busy", "an answer is still being written", generation=running.generation_id
            )
        await reconcile(running)
    await Message.objects.acreate(conversation=conversation, role=Message.Role.USER, content=text)
    generation = create_generation(
        owner, on_finish=save_answer, metadata={"model": model_name(), "offline": is_offline()}
    )
    answer = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        generation_id=generation.id,
    )
    generation.metadata["message_id"] = answer.pk
    messages = await prompt_messages(conversation)
    return await stream_generation(request, generation, stream_chat(messages))


async def new_conversation(request: HttpRequest) -> HttpResponse:
    """Start an empty conversation (the old one stays in the database)."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "POST to start a new conversation")
    owner = await request_owner(request, create=True)
    if owner is not None:
        await Conversation.objects.acreate(owner=owner)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"status": "ok"}, status=201)
    return redirect("chat")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF failures as JSON for API calls, Django's page otherwise."""
    wants_json = request.content_type == "application/json" or "json" in request.headers.get(
        "Accept", ""
    )
    if wants_json or request.path.startswith("/chat/"):
        return error(403, "csrf_failed", "CSRF verification failed: reload the page")
    from django.views.csrf import csrf_failure as default

    return default(request, reason)

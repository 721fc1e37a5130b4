"""Conversation history: what the model is sent, and saving a finished answer."""

from __future__ import annotations

from typing import Any

from stream_app.llm.generations import GenerationResult, lookup
from stream_app.llm.takeover import take_over

from .models import Conversation, Message

SYSTEM_PROMPT = (
    "You are a helpful assistant in a demo of django-stream-llm. Answer in concise markdown."
)
# How many earlier messages go with each question (the model's context is finite).
HISTORY_MESSAGES = 20


async def current_conversation(owner: str, *, create: bool = False) -> Conversation | None:
    """The owner's latest conversation (a new one with ``create`` if there is none)."""
    conversation = await Conversation.objects.filter(owner=owner).afirst()
    if conversation is None and create:
        conversation = await Conversation.objects.acreate(owner=owner)
    return conversation


async def prompt_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The system prompt and the latest messages of ``conversation``, oldest first."""
    recent = [
        message
        async for message in conversation.messages.exclude(content="").order_by("-created", "-pk")[
            :HISTORY_MESSAGES
        ]
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for message in reversed(recent):
        if message.role == Message.Role.ASSISTANT and message.status == Message.Status.ERROR:
            continue
        messages.append({"role": message.role, "content": message.content})
    return messages


async def save_answer(result: GenerationResult) -> None:
    """Store a finished generation in its assistant message (the generation's ``on_finish``)."""
    done, error = result.done, result.error
    await Message.objects.filter(generation_id=result.id).aupdate(
        content=result.text,
        status={
            "done": Message.Status.DONE,
            "cancelled": Message.Status.CANCELLED,
            "error": Message.Status.ERROR,
        }[result.status],
        finish_reason=(done.finish_reason or "") if done is not None else "",
        error_code=error.code if error is not None else "",
        error_message=error.message if error is not None else "",
        ttft_ms=done.ttft_ms if done is not None else None,
        tokens_per_second=done.tokens_per_second if done is not None else None,
        tokens=done.tokens if done is not None else None,
    )


async def still_streaming(generation_id: str) -> bool:
    """Whether the generation is still being written, taking it over if its worker died."""
    info = await lookup(generation_id)
    if info is not None and info.orphaned:
        info = await take_over(info) or info
    return info is not None and not info.finished and not info.orphaned


async def reconcile(message: Message) -> Message:
    """Mark a ``streaming`` answer whose generation no longer exists as interrupted.

    That happens when the worker that ran it died and no other could continue it (on Redis,
    one continues it: see ``stream_app.llm.takeover``): nothing would ever finish it.
    """
    if message.status != Message.Status.STREAMING or not message.generation_id:
        return message
    info = await lookup(message.generation_id)
    if info is not None and info.orphaned:
        info = await take_over(info) or info
    if info is None or info.orphaned:
        message.status = Message.Status.ERROR
        message.error_code = "interrupted"
        message.error_message = "This answer was interrupted (the server restarted)."
        await message.asave(update_fields=["status", "error_code", "error_message"])
    return message


def message_json(message: Message, stream_url: str | None = None) -> dict[str, Any]:
    """A message as the page's script reads it."""
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "generation_id": message.generation_id or None,
        "stream_url": stream_url,
        "finish_reason": message.finish_reason,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "ttft_ms": message.ttft_ms,
        "tokens_per_second": message.tokens_per_second,
        "tokens": message.tokens,
    }

"""The demo's conversation history: one conversation per owner at a time, saved answers."""

from __future__ import annotations

from django.db import models


class Conversation(models.Model):
    """A chat of one owner (a user, or an anonymous visitor's session)."""

    # The owner digest of stream_app.llm (an HMAC of "user:<pk>" or "session:<key>").
    owner = models.CharField(max_length=64, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"conversation {self.pk}"


class Message(models.Model):
    """One chat message; an assistant answer is filled in when its generation finishes."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        DONE = "done"
        STREAMING = "streaming"
        CANCELLED = "cancelled"
        ERROR = "error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    generation_id = models.CharField(max_length=32, blank=True, db_index=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    tokens = models.IntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "pk"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

"""The demo chat app."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """The demo's chat page and conversation history."""

    name = "project.chat"
    label = "chat"
    default_auto_field = "django.db.models.BigAutoField"

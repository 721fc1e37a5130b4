"""The Django app config: registers the system checks and signal receivers."""

from __future__ import annotations

from django.apps import AppConfig


class StreamAppConfig(AppConfig):
    """``stream_app``: server-sent events, channels and LLM streams."""

    name = "stream_app"
    verbose_name = "Stream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, lifecycle, logout, logs
        from .backends import close_backends, memory

        checks.register()
        # The ASGI lifespan's shutdown closes the backend once streams are closed.
        lifecycle.on_stop(close_backends)
        # The memory backend learns that this process serves streams (its first ASGI request).
        memory.connect_receivers()
        # Structured connect/disconnect log lines (stream_app.logs).
        logs.connect_receivers()
        # Streams end when their Django session logs out, on every worker (stream_app.logout).
        logout.connect_receivers()

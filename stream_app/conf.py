"""Settings: one ``STREAM_APP`` dict in the Django settings, merged over these defaults.

Read every value through ``conf.app_settings`` (``app_settings.KEEP_ALIVE``) so that
``override_settings(STREAM_APP=...)`` in tests takes effect: the merged dict is cached and the
cache is dropped on Django's ``setting_changed`` signal.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "AppSettings", "app_settings"]

DEFAULTS: dict[str, Any] = {
    # Dotted path of the backend class that moves events between processes.
    "BACKEND": "stream_app.backends.memory.MemoryBackend",
    # Redis backend: server URL and the prefix of every key it writes.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KEY_PREFIX": "stream_app",
    # Keyword arguments for every redis-py connection, over the URL's query string: TLS
    # (ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_check_hostname...),
    # username/password, and sentinel_kwargs (options of the Sentinel connections).
    "REDIS_OPTIONS": {},
    # Redis Sentinel: [(host, port), ...] and the service name (instead of REDIS_URL; a
    # redis+sentinel://host:port[,host:port]/service/db URL does the same).
    "REDIS_SENTINELS": [],
    "REDIS_SENTINEL_SERVICE": None,
    # Connections per worker and event loop for commands (a blocking pool: a command waits
    # for a free one, then fails as unreachable; never "too many connections").
    "REDIS_MAX_CONNECTIONS": 50,
    # Channels backend: the CHANNEL_LAYERS alias to use.
    "CHANNEL_LAYER": "default",
    # Replay history kept per channel: entries (approximate in Redis) and seconds.
    "HISTORY_SIZE": 1000,
    "HISTORY_TTL": 24 * 3600,
    # Session defaults.
    "RETRY": 2000,
    "KEEP_ALIVE": 10.0,
    "MAX_QUEUE": 1000,
    # Largest serialized event payload a publisher may send, in bytes.
    "MAX_MESSAGE_BYTES": 1_000_000,
    # Who may subscribe: channels anyone may read, channels every stream joins, and the hook.
    "PUBLIC_CHANNELS": [],
    "DEFAULT_CHANNELS": [],
    # Most ?channel= names one stream may ask for (DEFAULT_CHANNELS are not counted): each is
    # checked, subscribed and replayed before the stream starts.
    "MAX_CHANNELS_PER_STREAM": 20,
    "CAN_SUBSCRIBE": "stream_app.permissions.can_subscribe",
    # Optional hook (dotted path) ``(request, state) -> None`` that adds to a session's state.
    "SESSION_STATE": None,
    # Bearer token that lets other services POST to the publish endpoint (None: staff only).
    "PUBLISH_TOKEN": None,
    # Graceful shutdown: seconds to let streams end, and the base of the jittered retry (ms).
    "SHUTDOWN_GRACE": 5.0,
    "SHUTDOWN_RETRY": 1000,
    # Limits: a stream's longest life in seconds (None: no limit; each session gets up to 20%
    # less, so reconnects spread out), the longest one write may take before the peer is
    # dropped as stuck, and open streams per user per worker (None: no cap).
    "MAX_LIFETIME": None,
    "WRITE_TIMEOUT": 30.0,
    "MAX_CONNECTIONS_PER_USER": None,
    # Open anonymous streams per client address per worker (an IPv6 client counts per /64,
    # which one client usually holds whole; None: no cap). A browser opens one stream per
    # tab; behind a proxy set CLIENT_ADDRESS_HEADER, or every client shares the proxy's address.
    "MAX_CONNECTIONS_PER_ADDRESS": 50,
    # The request header that holds the client's address, set by your proxy (its last entry is
    # used: the address the proxy saw), or None for the connection's address (REMOTE_ADDR).
    # Only behind a proxy that overwrites or appends to it: clients can send any header.
    "CLIENT_ADDRESS_HEADER": None,
    # Garbage collector thresholds set at start-up (after freezing start-up objects), or None
    # to leave the collector alone: see stream_app.lifecycle.tune_gc for the measurements.
    "GC_THRESHOLD": (50_000, 5, 5),
    # Stream the response outside Django's per-request thread (see stream_app.asgi).
    "HANDOFF": True,
    # Hooks (dotted paths) ``async (session, channel_names) -> None`` that stream_view awaits
    # once a session is subscribed; the default delivers missed notifications from the database.
    "CONNECT_HOOKS": ["stream_app.notifications.backlog.deliver_backlog"],
    # Notifications: the channels the admin offers first and whose missed notifications are
    # delivered on connect (``user:<pk>`` always is), and how many at most per connect.
    "NOTIFICATION_CHANNELS": ["notifications", "staff"],
    "NOTIFICATION_BACKLOG": 50,
    # LLM (stream_app.llm): the OpenAI-compatible upstream. None falls back to the openai SDK's
    # OPENAI_API_KEY / OPENAI_BASE_URL environment variables; with neither, the embedded
    # offline model answers (so the demo runs on a machine with no key and no network).
    "LLM_API_KEY": None,
    "LLM_BASE_URL": None,
    "LLM_MODEL": "gpt-4o-mini",
    # Seconds to wait for the upstream (to connect, and between two chunks).
    "LLM_TIMEOUT": 60.0,
    # SDK retries of a failed request; 0 fails fast: a chat UI shows the error at once.
    "LLM_MAX_RETRIES": 0,
    # Tokens per second the offline model streams (0: as fast as it can).
    "LLM_OFFLINE_RATE": 40.0,
    # Token coalescing of direct streams: one event per N ms or N characters (0: off).
    "LLM_COALESCE_MS": 0,
    "LLM_COALESCE_CHARS": 0,
    # Generations: coalescing (on by default: every event is also written to the backend's
    # history), and seconds without any listener before the upstream call is cancelled.
    "GENERATION_COALESCE_MS": 50,
    "GENERATION_COALESCE_CHARS": 400,
    "GENERATION_GRACE": 30.0,
    # Generation takeover (shared backends): the running worker refreshes a heartbeat every
    # GENERATION_HEARTBEAT seconds with a TTL of GENERATION_HEARTBEAT_TTL; once it has expired
    # (the worker died), the next worker to resume the generation continues it.
    "GENERATION_HEARTBEAT": 1.0,
    "GENERATION_HEARTBEAT_TTL": 3.0,
    # Demo chat: the longest user message accepted, in characters.
    "CHAT_MAX_LENGTH": 4000,
    # Observability: bearer token the metrics endpoint requires (None: open; keep the path
    # private at the proxy), and seconds the health endpoint waits for the backend's ping.
    "METRICS_TOKEN": None,
    "HEALTH_TIMEOUT": 2.0,
}


class AppSettings:
    """Attribute access to the merged ``STREAM_APP`` settings."""

    def __init__(self) -> None:
        self._merged: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        """The project's own ``STREAM_APP`` dict (empty when unset)."""
        value = getattr(settings, "STREAM_APP", None)
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"STREAM_APP has no setting {name!r}")
        if self._merged is None:
            self._merged = {**DEFAULTS, **self.user_settings}
        return self._merged[name]

    def reload(self) -> None:
        """Forget the cached settings; they are read again on next access."""
        self._merged = None


app_settings = AppSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "STREAM_APP":
        app_settings.reload()

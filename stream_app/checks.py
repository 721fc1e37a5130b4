"""System checks: every configuration mistake we can see at startup, with a stable id.

- ``stream_app.E001``: served by plain ``runserver`` (WSGI): streams would never send a byte.
- ``stream_app.W002``: ``GZipMiddleware`` is installed (sessions opt out; hand-written streams
  must too).
- ``stream_app.E003``: unknown keys in ``STREAM_APP`` (a typo silently keeps the default).
- ``stream_app.E004``: ``STREAM_APP`` is not a dict.
- ``stream_app.E005``: ``STREAM_APP["BACKEND"]`` cannot be imported.
- ``stream_app.E006``: a numeric setting is out of range (or ``CLIENT_ADDRESS_HEADER`` is not a
  header name, or the Redis options or Sentinel settings have the wrong shape).
- ``stream_app.W007``: the memory backend while the environment asks for several workers
  (``WEB_CONCURRENCY`` or ``UVICORN_WORKERS`` above 1): each worker would see only its own
  broadcasts.
- ``stream_app.E008``: a backend or feature is selected whose extra is not installed (the Redis,
  Channels or PostgreSQL backend; ``LLM_*`` upstream settings without ``[llm]``;
  ``METRICS_TOKEN`` without ``[metrics]``). The message is the ``MissingExtra`` error that
  using it would raise (``stream_app.extras``).
- ``stream_app.E009``: the Channels backend without its layer in ``CHANNEL_LAYERS``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check
from django.utils.module_loading import import_string

from .conf import DEFAULTS, app_settings
from .extras import BACKEND_EXTRAS, MissingExtra, install_command, missing_modules

__all__ = [
    "WORKER_VARIABLES",
    "check_backend",
    "check_extras",
    "check_gzip",
    "check_server",
    "check_settings",
    "check_workers",
    "register",
]

#: Settings that configure stream_chat's upstream: setting one selects the [llm] extra.
LLM_UPSTREAM_SETTINGS = (
    "LLM_API_KEY",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "LLM_TIMEOUT",
    "LLM_MAX_RETRIES",
    "LLM_OFFLINE_RATE",
)

#: Environment variables that set how many worker processes a server runs (gunicorn and
#: uvicorn read WEB_CONCURRENCY, uvicorn UVICORN_WORKERS).
WORKER_VARIABLES = ("WEB_CONCURRENCY", "UVICORN_WORKERS")
MEMORY_BACKEND = "stream_app.backends.memory.MemoryBackend"

_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


def check_server(**kwargs: Any) -> list[CheckMessage]:
    """E001: ``manage.py runserver`` without daphne serves WSGI, where nothing streams."""
    argv = sys.argv[1:2]
    if argv == ["runserver"] and not apps.is_installed("daphne"):
        return [
            Error(
                "runserver serves WSGI here, so server-sent events would never be sent.",
                hint="Add 'daphne' at the top of INSTALLED_APPS (its runserver speaks ASGI; "
                f"{install_command('daphne')}), or run 'daphne project.asgi:application' / "
                "'uvicorn project.asgi:application'.",
                id="stream_app.E001",
            )
        ]
    return []


def check_gzip(**kwargs: Any) -> list[CheckMessage]:
    """W002: GZipMiddleware would compress (and so hold back) hand-written event streams."""
    if "django.middleware.gzip.GZipMiddleware" in settings.MIDDLEWARE:
        return [
            Warning(
                "GZipMiddleware is installed: it would compress event streams, each event as "
                "a separate gzip member, and proxies may buffer them.",
                hint="stream_app responses opt out with 'Content-Encoding: identity'; set the "
                "same header on any StreamingHttpResponse of your own that sends "
                "text/event-stream, or remove the middleware.",
                id="stream_app.W002",
            )
        ]
    return []


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """E003, E004, E006: the STREAM_APP dict's shape, keys and ranges."""
    value = getattr(settings, "STREAM_APP", {})
    if not isinstance(value, dict):
        return [
            Error(
                f"STREAM_APP must be a dict, not {type(value).__name__}.",
                hint="See the README's Settings section.",
                id="stream_app.E004",
            )
        ]
    errors: list[CheckMessage] = []
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown STREAM_APP keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="stream_app.E003",
            )
        )
    merged = {**DEFAULTS, **value}
    for key in ("HISTORY_SIZE", "MAX_QUEUE", "MAX_MESSAGE_BYTES", "REDIS_MAX_CONNECTIONS"):
        if not isinstance(merged[key], int) or merged[key] < 1:
            errors.append(_range_error(key, "a positive integer", merged[key]))
    threshold = merged["GC_THRESHOLD"]
    if threshold is not None and (
        not isinstance(threshold, list | tuple)
        or not 1 <= len(threshold) <= 3
        or not all(isinstance(n, int) and n > 0 for n in threshold)
    ):
        errors.append(_range_error("GC_THRESHOLD", "None or 1 to 3 positive integers", threshold))
    if not isinstance(merged["MAX_CHANNELS_PER_STREAM"], int) or (
        merged["MAX_CHANNELS_PER_STREAM"] < 1
    ):
        errors.append(
            _range_error(
                "MAX_CHANNELS_PER_STREAM", "a positive integer", merged["MAX_CHANNELS_PER_STREAM"]
            )
        )
    for key in ("MAX_CONNECTIONS_PER_USER", "MAX_CONNECTIONS_PER_ADDRESS"):
        if merged[key] is not None and (not isinstance(merged[key], int) or merged[key] < 1):
            errors.append(_range_error(key, "None or a positive integer", merged[key]))
    header = merged["CLIENT_ADDRESS_HEADER"]
    if header is not None and not (isinstance(header, str) and _HEADER_NAME.fullmatch(header)):
        # A META key (HTTP_X_FORWARDED_FOR) would never match and silently fall back.
        errors.append(
            _range_error(
                "CLIENT_ADDRESS_HEADER", 'None or a header name such as "X-Forwarded-For"', header
            )
        )
    if not isinstance(merged["REDIS_OPTIONS"], dict):
        errors.append(_range_error("REDIS_OPTIONS", "a dict", merged["REDIS_OPTIONS"]))
    sentinels = merged["REDIS_SENTINELS"]
    if not isinstance(sentinels, list | tuple) or not all(
        isinstance(s, list | tuple)
        and len(s) == 2
        and isinstance(s[0], str)
        and isinstance(s[1], int)
        for s in sentinels
    ):
        errors.append(_range_error("REDIS_SENTINELS", "a list of (host, port)", sentinels))
    elif sentinels and not (
        isinstance(merged["REDIS_SENTINEL_SERVICE"], str) and merged["REDIS_SENTINEL_SERVICE"]
    ):
        errors.append(
            _range_error(
                "REDIS_SENTINEL_SERVICE",
                "the service name when REDIS_SENTINELS is set",
                merged["REDIS_SENTINEL_SERVICE"],
            )
        )
    for key in ("KEEP_ALIVE", "RETRY"):
        if merged[key] is not None and (
            not isinstance(merged[key], int | float) or merged[key] < 0
        ):
            errors.append(_range_error(key, "None or a non-negative number", merged[key]))
    return errors


def _range_error(key: str, expected: str, value: object) -> Error:
    return Error(
        f"STREAM_APP[{key!r}] must be {expected}, not {value!r}.",
        hint="See the README's Settings section.",
        id="stream_app.E006",
    )


def check_backend(**kwargs: Any) -> list[CheckMessage]:
    """E005: the configured backend class must be importable (E008 if only its extra is
    missing, see ``check_extras``); E009: the Channels backend needs its layer in
    ``CHANNEL_LAYERS``."""
    value = getattr(settings, "STREAM_APP", {})
    options = value if isinstance(value, dict) else {}
    path = options.get("BACKEND", DEFAULTS["BACKEND"])
    if path in BACKEND_EXTRAS and missing_modules(BACKEND_EXTRAS[path][0]):
        return []
    try:
        backend = import_string(path)
    except MissingExtra as exc:
        # A backend of the project's own, guarded the same way.
        return [_extra_error(exc)]
    except ImportError as exc:
        return [
            Error(
                f"STREAM_APP['BACKEND'] = {path!r} cannot be imported: {exc}.",
                hint="Use stream_app.backends.memory.MemoryBackend, "
                "stream_app.backends.redis.RedisBackend or "
                "stream_app.backends.channels.ChannelsBackend.",
                id="stream_app.E005",
            )
        ]
    alias = options.get("CHANNEL_LAYER", DEFAULTS["CHANNEL_LAYER"])
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if getattr(backend, "needs_channel_layer", False) and alias not in layers:
        return [
            Error(
                f"STREAM_APP['BACKEND'] is the Channels backend, but CHANNEL_LAYERS has no "
                f"layer {alias!r}: no broadcast could be sent.",
                hint="Configure CHANNEL_LAYERS (e.g. channels_redis.core.RedisChannelLayer), "
                "or set STREAM_APP['CHANNEL_LAYER'] to one of its aliases.",
                id="stream_app.E009",
            )
        ]
    return []


def check_extras(**kwargs: Any) -> list[CheckMessage]:
    """E008: the selected backend or features have their extras installed."""
    value = getattr(settings, "STREAM_APP", {})
    if not isinstance(value, dict):
        return []  # E004
    selected: list[tuple[str, str, str]] = []
    path = value.get("BACKEND", DEFAULTS["BACKEND"])
    if path in BACKEND_EXTRAS:
        extra, feature = BACKEND_EXTRAS[path]
        selected.append((extra, feature, f"STREAM_APP['BACKEND'] = {path!r}"))
    llm_keys = [key for key in LLM_UPSTREAM_SETTINGS if key in value]
    if llm_keys:
        selected.append(("llm", "stream_chat", f"STREAM_APP[{llm_keys[0]!r}] is set"))
    if value.get("METRICS_TOKEN"):
        selected.append(("metrics", "The metrics endpoint", "STREAM_APP['METRICS_TOKEN'] is set"))
    errors: list[CheckMessage] = []
    for extra, feature, why in selected:
        missing = missing_modules(extra)
        if missing:
            errors.append(_extra_error(MissingExtra(extra, feature, missing), why))
    return errors


def _extra_error(exc: MissingExtra, why: str | None = None) -> Error:
    return Error(
        f"{why}: {exc.summary}." if why else f"{exc.summary}.",
        hint=f"{install_command(exc.extra)}, or change the setting.",
        id="stream_app.E008",
    )


def check_workers(**kwargs: Any) -> list[CheckMessage]:
    """W007: the process-local memory backend where the environment asks for several workers."""
    if app_settings.BACKEND != MEMORY_BACKEND:
        return []
    for name in WORKER_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return [
                Warning(
                    f"{name}={value} runs several worker processes, but the memory backend "
                    "delivers each broadcast only to the streams of the worker that sent it.",
                    hint='Set STREAM_APP["BACKEND"] = "stream_app.backends.redis.RedisBackend" '
                    f"(with REDIS_URL; {install_command('redis')}), or run one worker.",
                    id="stream_app.W007",
                )
            ]
    return []


def register() -> None:
    """Register the checks (called from ``AppConfig.ready``)."""
    for check in (
        check_server,
        check_gzip,
        check_settings,
        check_backend,
        check_extras,
        check_workers,
    ):
        register_check(check, Tags.compatibility)

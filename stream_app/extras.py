"""Optional dependencies: which extra of ``django-stream-llm`` brings which modules.

``pip install django-stream-llm`` installs the core (Django and asgiref: plain SSE, channels on
the memory backend, notifications). Each optional part has an extra, and the module that uses
it imports it behind a guard, so that using the part without its extra fails with one message,
in the same words as system check ``stream_app.E008``::

    try:
        import redis
    except ImportError as exc:
        raise MissingExtra("redis", "The Redis backend") from exc
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["BACKEND_EXTRAS", "EXTRAS", "MissingExtra", "install_command", "missing_modules"]

#: The modules each extra installs (its distributions' import names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "llm": ("openai", "httpx2"),
    "anthropic": ("anthropic",),
    "channels": ("channels",),
    "postgres": ("psycopg", "psycopg_pool"),
    "metrics": ("prometheus_client",),
    "daphne": ("daphne",),
    "testing": ("httpx",),
}

#: The backends that ship with stream_app and the extra each needs (``STREAM_APP["BACKEND"]``).
BACKEND_EXTRAS: dict[str, tuple[str, str]] = {
    "stream_app.backends.redis.RedisBackend": ("redis", "The Redis backend"),
    "stream_app.backends.channels.ChannelsBackend": ("channels", "The Channels backend"),
    "stream_app.backends.postgres.PostgresBackend": ("postgres", "The PostgreSQL backend"),
}


def install_command(extra: str) -> str:
    """The shell command that installs ``extra`` (quoted: ``[`` is a glob in most shells)."""
    return f"pip install 'django-stream-llm[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty: the extra is installed).

    Imports them rather than looking them up: a module that is present but cannot load (psycopg
    without libpq) is missing too.
    """
    missing = []
    for module in EXTRAS[extra]:
        try:
            import_module(module)
        except ImportError:
            missing.append(module)
    return missing


class MissingExtra(ImportError):
    """A part of stream_app was used without the extra that installs what it imports.

    ``summary`` names the part, the missing modules and the extra; the message adds the
    command that installs it.
    """

    def __init__(self, extra: str, feature: str, missing: list[str] | None = None) -> None:
        self.extra = extra
        self.feature = feature
        modules = missing if missing is not None else missing_modules(extra) or list(EXTRAS[extra])
        verb = "is" if len(modules) == 1 else "are"
        self.summary = (
            f"{feature} needs {' and '.join(modules)}, which {verb} not installed: "
            f"install django-stream-llm[{extra}]"
        )
        super().__init__(f"{self.summary} ({install_command(extra)}).")

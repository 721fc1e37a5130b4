"""Settings of the demo project, read from the environment.

- ``DJANGO_DEBUG`` (default on for the demo), ``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS``
- ``DATABASE_URL``-free: SQLite in ``db.sqlite3`` unless ``DJANGO_DB_PATH`` says otherwise
- ``STREAM_BACKEND``: ``memory`` (default), ``redis`` or ``channels``; ``REDIS_URL``
- ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` / ``OPENAI_MODEL``: a real model; without them the
  demo uses the embedded offline model
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """A boolean from the environment (1/true/yes/on)."""
    value = os.environ.get(name)
    return default if value is None else value.lower() in ("1", "true", "yes", "on")


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-insecure-key-change-me" if DEBUG else "")
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [
    origin for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin
]

INSTALLED_APPS = [
    # daphne's runserver speaks ASGI (check stream_app.E001). The demo itself runs uvicorn, so
    # scripts/demo and the Dockerfile leave daphne out: it comes with the daphne extra.
    *(["daphne"] if find_spec("daphne") else []),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "stream_app",
    "project.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 20},
    }
}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"

_BACKENDS = {
    "memory": "stream_app.backends.memory.MemoryBackend",
    "redis": "stream_app.backends.redis.RedisBackend",
    "channels": "stream_app.backends.channels.ChannelsBackend",
}
STREAM_APP = {
    "BACKEND": _BACKENDS[os.environ.get("STREAM_BACKEND", "memory")],
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "KEY_PREFIX": os.environ.get("STREAM_KEY_PREFIX", "stream_app"),
    "PUBLIC_CHANNELS": ["news", "notifications", "bench"],
    "DEFAULT_CHANNELS": ["news"],
    "KEEP_ALIVE": float(os.environ.get("STREAM_KEEP_ALIVE", "10")),
    "PUBLISH_TOKEN": os.environ.get("STREAM_PUBLISH_TOKEN") or None,
    # Set only behind a proxy that appends the client's address to it (deploy/nginx.conf).
    "CLIENT_ADDRESS_HEADER": os.environ.get("STREAM_CLIENT_ADDRESS_HEADER") or None,
}
# The LLM of the demo chat (stream_app.llm): OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL
# point it at OpenAI or any compatible server; with neither key nor URL the embedded offline
# model answers (STREAM_OFFLINE_RATE tokens per second).
STREAM_APP.update(
    {
        "LLM_API_KEY": os.environ.get("OPENAI_API_KEY") or None,
        "LLM_BASE_URL": os.environ.get("OPENAI_BASE_URL") or None,
        "LLM_MODEL": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "LLM_TIMEOUT": float(os.environ.get("STREAM_LLM_TIMEOUT", "60")),
        "LLM_OFFLINE_RATE": float(os.environ.get("STREAM_OFFLINE_RATE", "40")),
        "GENERATION_GRACE": float(os.environ.get("STREAM_GENERATION_GRACE", "30")),
        # Token coalescing (benchmarks switch it): direct streams off, generations on.
        "LLM_COALESCE_MS": float(os.environ.get("STREAM_LLM_COALESCE_MS", "0")),
        "LLM_COALESCE_CHARS": int(os.environ.get("STREAM_LLM_COALESCE_CHARS", "0")),
        "GENERATION_COALESCE_MS": float(os.environ.get("STREAM_GENERATION_COALESCE_MS", "50")),
        "GENERATION_COALESCE_CHARS": int(os.environ.get("STREAM_GENERATION_COALESCE_CHARS", "400")),
        "CHAT_MAX_LENGTH": int(os.environ.get("CHAT_MAX_LENGTH", "4000")),
    }
)
# Bearer token of the OpenAI-compatible /v1/chat/completions and /api/chat endpoints (unset:
# /v1 is off and /api/chat needs a same-origin page with its CSRF token).
CHAT_API_TOKEN = os.environ.get("CHAT_API_TOKEN") or None
# CSRF failures of the chat's JSON endpoints answer JSON.
CSRF_FAILURE_VIEW = "project.chat.views.csrf_failure"
# daphne / uvicorn serve no static files: the demo serves them through Django.
DEMO_SERVE_STATIC = env_bool("DEMO_SERVE_STATIC", True)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "stream_app": {
            "handlers": ["console"],
            "level": os.environ.get("STREAM_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}

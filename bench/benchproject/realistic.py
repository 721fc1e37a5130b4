"""The realistic profile: a project set up the way the README's quick start tells users to.

``django-admin startproject``'s settings (Django's default ``MIDDLEWARE``, the contrib apps, a
SQLite file database, DEBUG off), ``INSTALLED_APPS += ["stream_app"]`` with ``stream_app``'s
defaults (the notifications app and its connect hook on), ``stream_app.asgi`` serving it. The
database file is migrated and seeded per run by ``bench.seed`` (``BENCH_DB_PATH``).

What differs from the quick start, and why:
- ``PUBLIC_CHANNELS = ["notifications"]``: the clients subscribe to ``notifications``, one of
  ``NOTIFICATION_CHANNELS``, as the demo's chat page does (so the connect hook asks the
  database on every connection); logged-in clients add their ``user:<pk>`` channel.
- ``CLIENT_ADDRESS_HEADER = "X-Forwarded-For"``: every load-generator client comes from
  127.0.0.1, so each sends its own address in that header, as a proxy would; the default
  ``MAX_CONNECTIONS_PER_ADDRESS`` (50) stays on.
- The memory and Redis backends are subclasses that count history reads
  (``bench.benchproject.backends``) for the reconnect storm.
"""

import os

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "stream_app",
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

ROOT_URLCONF = "bench.benchproject.realistic_urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
        "NAME": os.environ.get("BENCH_DB_PATH", ":memory:"),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_BACKENDS = {
    "memory": "bench.benchproject.backends.CountingMemoryBackend",
    "redis": "bench.benchproject.backends.CountingRedisBackend",
}
STREAM_APP = {
    "PUBLIC_CHANNELS": ["notifications"],
    "CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
    "BACKEND": _BACKENDS[os.environ.get("STREAM_BACKEND", "memory")],
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "KEY_PREFIX": os.environ.get("STREAM_KEY_PREFIX", "stream_app"),
}
# The channel the bench views broadcast on (bench.benchproject.views).
BENCH_CHANNEL = "notifications"

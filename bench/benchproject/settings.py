"""The demo project's settings (middleware included, unchanged) with DEBUG off and bench URLs.

The backend, Redis URL, key prefix and keep-alive come from the environment exactly as in the
demo (``STREAM_BACKEND``, ``REDIS_URL``, ``STREAM_KEY_PREFIX``, ``STREAM_KEEP_ALIVE``).
"""

from project.settings import *  # noqa: F403
from project.settings import STREAM_APP

DEBUG = False
ROOT_URLCONF = "bench.benchproject.urls"
# Nothing here touches the database (anonymous users, no session cookie): keep the repo's file
# out of the way.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
# Every load-generator client comes from 127.0.0.1: no per-address cap on anonymous streams.
STREAM_APP = {**STREAM_APP, "MAX_CONNECTIONS_PER_ADDRESS": None}

"""The lean profile: the demo's settings (middleware included, unchanged) with DEBUG off, an
in-memory database nobody touches, and the bench URLs. Also what ``python -m bench.llm`` serves.

Clients are anonymous and carry no cookie; they subscribe to ``bench``, which is not one of
``NOTIFICATION_CHANNELS``: the connect hook never asks the database. The backend, Redis URL,
key prefix and keep-alive come from the environment exactly as in the demo
(``STREAM_BACKEND``, ``REDIS_URL``, ``STREAM_KEY_PREFIX``, ``STREAM_KEEP_ALIVE``).
"""

from project.settings import *  # noqa: F403
from project.settings import STREAM_APP

DEBUG = False
ROOT_URLCONF = "bench.benchproject.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
# Every load-generator client comes from 127.0.0.1: no per-address cap on anonymous streams.
STREAM_APP = {**STREAM_APP, "MAX_CONNECTIONS_PER_ADDRESS": None}
# The channel the bench views broadcast on (bench.benchproject.views).
BENCH_CHANNEL = "bench"

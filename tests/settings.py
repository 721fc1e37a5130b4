"""Test settings: the demo's, with a SQLite file that the test servers share with the tests.

pytest-django creates the test database at ``TEST_DB_PATH``; server processes started by the
fixtures open the same file (``DJANGO_DB_PATH``), so rows a transactional test commits are seen
by the servers.
"""

import os
import tempfile

from project.settings import *  # noqa: F403
from project.settings import DATABASES, STREAM_APP

TEST_DB_PATH = os.environ.get(
    "STREAM_TEST_DB", os.path.join(tempfile.gettempdir(), f"stream_app_test_{os.getpid()}.sqlite3")
)
DATABASES["default"]["TEST"] = {"NAME": TEST_DB_PATH}
ROOT_URLCONF = "tests.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
STREAM_APP = {
    **STREAM_APP,
    "SESSION_STATE": "tests.hooks.state_from_query",
    "PUBLIC_CHANNELS": ["news", "notifications", "bench", "alpha", "beta"],
    "PUBLISH_TOKEN": os.environ.get("STREAM_PUBLISH_TOKEN", "test-token"),
}

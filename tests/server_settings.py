"""Settings of the server processes started by the tests: the test settings on the test DB."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["DJANGO_DB_PATH"]
if os.environ.get("STREAM_GZIP"):
    from tests.settings import MIDDLEWARE

    MIDDLEWARE.insert(0, "django.middleware.gzip.GZipMiddleware")
if os.environ.get("STREAM_RECORDING_MIDDLEWARE"):
    from tests.settings import MIDDLEWARE

    MIDDLEWARE.append("tests.handshake_views.RecordingMiddleware")
if os.environ.get("STREAM_APP_JSON"):
    import json

    from tests.settings import STREAM_APP

    STREAM_APP.update(json.loads(os.environ["STREAM_APP_JSON"]))
if os.environ.get("STREAM_CHANNEL_LAYER"):
    # The ChannelsBackend tests run each channels-redis layer class.
    from tests.settings import CHANNEL_LAYERS

    CHANNEL_LAYERS["default"]["BACKEND"] = os.environ["STREAM_CHANNEL_LAYER"]

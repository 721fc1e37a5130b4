"""Settings of the docs examples' server: the test servers' settings plus what the guides add."""

import os

from tests.server_settings import *  # noqa: F403
from tests.server_settings import INSTALLED_APPS, MIDDLEWARE

ROOT_URLCONF = "tests.docs_examples.urls"
INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework"]

# --8<-- [start:cors]
INSTALLED_APPS += ["corsheaders"]
# First, or at least before any middleware that can answer (CommonMiddleware...).
MIDDLEWARE = ["corsheaders.middleware.CorsMiddleware", *MIDDLEWARE]
# The origins of the pages that open streams here ("https://app.example.com").
CORS_ALLOWED_ORIGINS = os.environ.get("CORS_ALLOWED_ORIGINS", "").split()
# EventSource(url, {withCredentials: true}) sends cookies: the answer must say it may.
CORS_ALLOW_CREDENTIALS = True
# --8<-- [end:cors]

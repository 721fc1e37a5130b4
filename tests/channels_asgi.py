"""The README's ``asgi.py`` for a project that runs Django Channels (the test servers use it
when ``STREAM_CHANNELS_ROUTER`` is set; tests/test_channels_project.py checks the two agree)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.server_settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from stream_app.asgi import get_asgi_application

django_app = get_asgi_application()  # first: it sets Django up before consumers import models

from tests.channels_consumers import NewsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_app,
        "lifespan": django_app,  # stream_app's start-up and graceful shutdown
        "websocket": URLRouter([path("ws/news/", NewsConsumer.as_asgi())]),
    }
)

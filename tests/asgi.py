"""ASGI application of the test servers (daphne, uvicorn)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.server_settings")

if os.environ.get("STREAM_CHANNELS_ROUTER"):
    from tests.channels_asgi import application
elif os.environ.get("STREAM_PLAIN_DJANGO"):
    from django.core.asgi import get_asgi_application

    application = get_asgi_application()
else:
    from stream_app.asgi import get_asgi_application

    application = get_asgi_application()

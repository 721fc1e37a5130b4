"""Our entry point: ``stream_app.asgi.get_asgi_application()`` (streams handed off)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")

from stream_app.asgi import get_asgi_application

application = get_asgi_application()

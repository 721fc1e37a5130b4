"""ASGI entry point of the demo: Django, with streams handed off after the request."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from stream_app.asgi import get_asgi_application

application = get_asgi_application()

"""Django's own ``get_asgi_application()``: the plain-Django yardstick, and our sessions with
one thread held per open stream (to show what the hand-off saves)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()

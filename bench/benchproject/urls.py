"""The demo's URLs (``/sse/``, ``/stream/publish/``) plus ``/bench/`` (ours, ``/bench/llm/`` for
``python -m bench.llm``) and ``/plain/``."""

from django.urls import path

from bench.benchproject import llm_views, plain, views
from project.urls import urlpatterns as demo_urlpatterns

urlpatterns = [
    *demo_urlpatterns,
    path("bench/broadcast/", views.broadcast),
    path("bench/tokens/", views.tokens),
    path("bench/stats/", views.stats),
    path("bench/llm/chat/", llm_views.chat),
    path("bench/llm/generation/", llm_views.generation),
    path("plain/sse/", plain.listen),
    path("plain/broadcast/", plain.broadcast),
    path("plain/tokens/", plain.tokens),
    path("plain/stats/", plain.stats),
]

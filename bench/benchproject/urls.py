"""The lean profile's URLs: the demo's (``/sse/``, ``/stream/publish/``), the bench views, and
``/bench/llm/`` for ``python -m bench.llm``."""

from django.urls import path

from bench.benchproject import bench_urls, llm_views
from project.urls import urlpatterns as demo_urlpatterns

urlpatterns = [
    *demo_urlpatterns,
    *bench_urls.urlpatterns,
    path("bench/llm/chat/", llm_views.chat),
    path("bench/llm/generation/", llm_views.generation),
]

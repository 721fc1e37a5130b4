"""The quick start's URLs (admin, ``/sse/``, ``/stream/``) plus the bench views."""

from django.contrib import admin
from django.urls import include, path

from bench.benchproject import bench_urls
from stream_app.views import stream_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("sse/", stream_view),
    path("stream/", include("stream_app.urls")),
    *bench_urls.urlpatterns,
]

"""URLs of the demo project."""

from django.contrib import admin
from django.urls import include, path

from stream_app.views import stream_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("sse/", stream_view),
    path("stream/", include("stream_app.urls")),
]

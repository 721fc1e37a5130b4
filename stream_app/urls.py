"""URLs: ``path("stream/", include("stream_app.urls"))`` mounts the endpoints."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "stream_app"
urlpatterns = [
    path("", views.stream_view, name="stream"),
    path("publish/", views.publish_view, name="publish"),
    path("<str:channel>/", views.stream_view, name="channel"),
]

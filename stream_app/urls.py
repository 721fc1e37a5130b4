"""URLs: ``path("stream/", include("stream_app.urls"))`` mounts the endpoints."""

from __future__ import annotations

from django.urls import path

from . import health, metrics, openapi, views
from .notifications import views as notification_views

app_name = "stream_app"
urlpatterns = [
    path("", views.stream_view, name="stream"),
    path("publish/", views.publish_view, name="publish"),
    path("notifications/read/", notification_views.mark_read_view, name="notifications_read"),
    path("notifications/demo/", notification_views.demo_view, name="notifications_demo"),
    # Before the catch-all channel route: for Prometheus and load balancers.
    path("metrics/", metrics.metrics_view, name="metrics"),
    path("health/", health.health_view, name="health"),
    # No trailing slash: "openapi.json" stays a channel at "openapi.json/" below.
    path("openapi.json", openapi.openapi_view, name="openapi"),
    path("<str:channel>/", views.stream_view, name="channel"),
]

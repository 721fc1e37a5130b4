"""URLs of generations: ``path("chat/", include("stream_app.llm.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "stream_llm"
urlpatterns = [
    path(
        "generations/<str:generation_id>/stream/",
        views.generation_stream_view,
        name="generation-stream",
    ),
    path(
        "generations/<str:generation_id>/cancel/",
        views.generation_cancel_view,
        name="generation-cancel",
    ),
]

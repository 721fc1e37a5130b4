"""The bench views' URLs, shared by both profiles: ``/bench/`` ours, ``/plain/`` the plain
Django yardstick."""

from django.urls import path

from bench.benchproject import plain, views

urlpatterns = [
    path("bench/broadcast/", views.broadcast),
    path("bench/publish/", views.publish),
    path("bench/tokens/", views.tokens),
    path("bench/stats/", views.stats),
    path("plain/sse/", plain.listen),
    path("plain/broadcast/", plain.broadcast),
    path("plain/tokens/", plain.tokens),
    path("plain/stats/", plain.stats),
]

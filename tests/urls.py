"""URLs of the test servers: the demo's, plus the views in tests.views under /t/."""

from django.contrib.auth.views import LogoutView
from django.urls import path

from project.urls import urlpatterns as demo_urlpatterns
from tests import handshake_views, views

urlpatterns = [
    *demo_urlpatterns,
    # Django's own logout view (POST with the CSRF token), for tests/test_logout.py.
    path("t/logout/", LogoutView.as_view(next_page="/")),
    path("t/push/", views.push),
    path("t/idle/", views.idle),
    path("t/last-id/", views.last_id),
    path("t/flood/", views.flood),
    path("t/flood-held/", views.flood_held),
    path("t/batch/", views.batch),
    path("t/pusher/", views.pusher),
    path("t/failing/", views.failing),
    path("t/unsent/", views.unsent),
    path("t/state/", views.state),
    path("t/reset/", views.reset),
    path("t/sse/iterable/", views.sse_iterable),
    path("t/sse/async/", views.sse_async),
    path("t/sse/manual/", views.sse_manual),
    path("t/sse/value/", views.sse_value),
    path("t/sse/fail-before/", views.sse_fail_before),
    path("t/sse/fail-after/", views.sse_fail_after),
    path("t/sse/proxy/", views.sse_proxy),
    path("t/hs/plain/", handshake_views.plain),
    path("t/hs/endpoint/", handshake_views.endpoint),
    path("t/hs/leftover/", handshake_views.leftover),
    path("t/hs/slow/", handshake_views.slow),
    path("t/hs/broken/", handshake_views.broken),
    path("t/hs/report/", handshake_views.report),
]

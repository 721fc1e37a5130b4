"""URLs of the test servers: the demo's, plus the views in tests.views under /t/."""

from django.urls import path

from project.urls import urlpatterns as demo_urlpatterns
from tests import views

urlpatterns = [
    *demo_urlpatterns,
    path("t/push/", views.push),
    path("t/idle/", views.idle),
    path("t/last-id/", views.last_id),
    path("t/flood/", views.flood),
    path("t/batch/", views.batch),
    path("t/pusher/", views.pusher),
    path("t/failing/", views.failing),
    path("t/state/", views.state),
    path("t/reset/", views.reset),
]

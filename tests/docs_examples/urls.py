"""URLs of the docs examples' server: the test servers' URLs plus the guides' views."""

from django.urls import path

from tests.docs_examples.drf_views import MyEventsView
from tests.urls import urlpatterns as test_urlpatterns

urlpatterns = [
    *test_urlpatterns,
    path("api/events/", MyEventsView.as_view()),
]

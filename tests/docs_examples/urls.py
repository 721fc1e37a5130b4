"""URLs of the docs examples' server: the test servers' URLs plus the guides' views."""

from django.urls import path

from tests.docs_examples.drf_views import MyEventsView
from tests.docs_examples.llm_ask import ask
from tests.docs_examples.llm_chat import chat
from tests.docs_examples.sse_starlette_after import numbers
from tests.urls import urlpatterns as test_urlpatterns

urlpatterns = [
    *test_urlpatterns,
    path("api/events/", MyEventsView.as_view()),
    path("ask/", ask),
    path("numbers/", numbers),
    # The generations' resume and cancel URLs: the demo's path("chat/", include(...)).
    path("tutorial/chat/", chat),
]

"""URLs of the demo project."""

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from project.chat import api as chat_api
from project.chat import views as chat_views
from stream_app.views import stream_view

# Errors Django raises before any view (DisallowedHost, a form body the CSRF check cannot
# parse) are answered as JSON like every other error of the API.
handler400 = "stream_app.requests.bad_request"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("sse/", stream_view),
    path("stream/", include("stream_app.urls")),
    # The demo chat: the page, starting an answer, and resuming / cancelling generations.
    path("", chat_views.index, name="chat"),
    path("chat/send/", chat_views.send, name="chat-send"),
    path("chat/new/", chat_views.new_conversation, name="chat-new"),
    path("chat/", include("stream_app.llm.urls")),
    # The same model as an OpenAI-compatible API and a Vercel AI SDK useChat endpoint.
    path("v1/chat/completions", chat_api.openai_chat_completions),
    path("api/chat", chat_api.vercel_chat),
    path("api/stream", chat_api.events_stream),
]

if settings.DEMO_SERVE_STATIC:
    # daphne and uvicorn serve no static files: let Django do it for the demo (use a web
    # server or WhiteNoise in production and set DEMO_SERVE_STATIC=0).
    urlpatterns.append(
        re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    )

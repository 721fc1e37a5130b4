"""The chat page and the chat's input validation, through Django's ASGI test client.

``AsyncClient`` builds real ``ASGIRequest`` objects and runs the middleware (sessions, CSRF
enforced here), so everything up to the first byte of a stream is tested in-process, and the
offline model's answer is read in process with ``stream_client``; the streams themselves are
tested over real servers (tests/test_llm_generations.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from project.chat.models import Conversation, Message
from stream_app.conf import app_settings
from stream_app.testing import StreamClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The offline model answers unless a model is configured: keep the developer's env out.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


async def csrf_client() -> tuple[AsyncClient, str]:
    """A client that enforces CSRF and has loaded the page (so it holds the token)."""
    client = AsyncClient(enforce_csrf_checks=True)
    page = await client.get("/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    return client, token


def config_of(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', html)
    assert match
    config: dict[str, Any] = json.loads(match.group(1))
    return config


async def test_chat_page_renders_the_composer_and_its_config() -> None:
    client, _token = await csrf_client()
    page = await client.get("/")
    html = page.content.decode()
    assert 'id="composer"' in html
    assert 'src="/static/stream_app/stream.js"' in html
    config = config_of(html)
    assert config["send_url"] == "/chat/send/"
    assert config["max_length"] == app_settings.CHAT_MAX_LENGTH
    assert config["csrf_token"]
    assert page["Content-Type"].startswith("text/html")


async def test_chat_page_announces_the_offline_model() -> None:
    page = await AsyncClient().get("/")
    html = page.content.decode()
    assert 'id="offline-banner"' in html
    assert config_of(html)["offline"] is True
    assert config_of(html)["model"] == "offline"


async def test_chat_page_without_offline_model_has_no_banner() -> None:
    with override_settings(STREAM_APP={"LLM_BASE_URL": "http://127.0.0.1:9/v1", "LLM_MODEL": "m1"}):
        page = await AsyncClient().get("/")
    html = page.content.decode()
    assert 'id="offline-banner"' not in html
    assert config_of(html)["model"] == "m1"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"message": ""}', "empty_message"),
        ('{"message": "   \\n\\t "}', "empty_message"),
        ('{"message": "' + "x" * 4001 + '"}', "message_too_long"),
        ("{not json", "invalid_json"),
        ("\xff\xfe", "invalid_json"),
        ("[1, 2]", "invalid_request"),
        ('{"message": 42}', "invalid_request"),
        ('{"text": "hi"}', "invalid_request"),
        ('{"message": "hi", "role": "system"}', "invalid_request"),
    ],
)
async def test_chat_send_refuses_bad_input_with_400_json(body: str, code: str) -> None:
    client, token = await csrf_client()
    response = await client.post(
        "/chat/send/",
        data=body.encode("latin-1"),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == code
    assert not await Message.objects.aexists()


async def test_chat_send_limit_follows_the_setting() -> None:
    client, token = await csrf_client()
    with override_settings(STREAM_APP={"CHAT_MAX_LENGTH": 10}):
        response = await client.post(
            "/chat/send/",
            data={"message": "x" * 11},
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
    assert response.status_code == 400
    assert response.json() == {
        "error": "message_too_long",
        "message": "messages are limited to 10 characters",
        "limit": 10,
    }


async def test_chat_send_without_csrf_token_is_403_json() -> None:
    client, _ = await csrf_client()
    response = await client.post(
        "/chat/send/", data={"message": "hi"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert not await Conversation.objects.aexists()


async def test_chat_send_with_a_wrong_csrf_token_is_403() -> None:
    client, _ = await csrf_client()
    response = await client.post(
        "/chat/send/",
        data={"message": "hi"},
        content_type="application/json",
        headers={"X-CSRFToken": "x" * 64},
    )
    assert response.status_code == 403


async def test_chat_send_get_is_405() -> None:
    response = await AsyncClient().get("/chat/send/")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_chat_cancel_needs_csrf() -> None:
    client, _ = await csrf_client()
    response = await client.post("/chat/generations/" + "a" * 32 + "/cancel/")
    assert response.status_code == 403


async def test_chat_new_conversation_starts_an_empty_history() -> None:
    client, token = await csrf_client()
    response = await client.post(
        "/chat/new/", headers={"X-CSRFToken": token, "Accept": "application/json"}
    )
    assert response.status_code == 201
    assert await Conversation.objects.acount() == 1
    again = await client.post("/chat/new/", headers={"X-CSRFToken": token})
    assert again.status_code == 302
    assert await Conversation.objects.acount() == 2
    conversations = [c.owner async for c in Conversation.objects.all()]
    assert len(set(conversations)) == 1


async def test_api_stream_answers_in_process_with_the_offline_model(
    settings: Any, stream_client: StreamClient
) -> None:
    settings.CHAT_API_TOKEN = "chat-token"
    settings.STREAM_APP = {**settings.STREAM_APP, "LLM_OFFLINE_RATE": 0}
    async with stream_client.read_stream(
        "/api/stream",
        method="POST",
        body=json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        headers={"Authorization": "Bearer chat-token"},
    ) as events:
        assert events.status_code == 200
        answer = await events.until("done")
        assert await events.read_all() == []
    names = [event.event for event in answer]
    assert names[-2:] == ["usage", "done"]
    assert set(names) == {"token", "usage", "done"}
    assert "".join(json.loads(e.data or "")["text"] for e in answer if e.event == "token")

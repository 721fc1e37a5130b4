"""The mark-read endpoint's answers to bad input: a 4xx JSON error naming what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from stream_app.notifications.views import MAX_IDS

URL = "/stream/notifications/read/"


@pytest.fixture
def client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create(username="reader"))
    return client


def test_mark_read_anonymous_is_refused(db: None) -> None:
    response = Client().post(URL, {"ids": "1"})
    assert response.status_code == 403
    assert response.json()["error"] == "login_required"


@pytest.mark.parametrize(
    ("body", "content_type", "code", "message"),
    [
        (b"{not json", "application/json", "invalid_json", "invalid JSON body"),
        (b'["ids"]', "application/json", "invalid_ids", "a list of up to"),
        (b'{"ids": 3}', "application/json", "invalid_ids", "a list of up to"),
        (
            f'{{"ids": {list(range(MAX_IDS + 1))}}}'.encode(),
            "application/json",
            "invalid_ids",
            f"up to {MAX_IDS} ids",
        ),
        (b'{"ids": ["one"]}', "application/json", "invalid_ids", "ids are positive integers"),
        (b'{"ids": [null]}', "application/json", "invalid_ids", "ids are positive integers"),
    ],
)
def test_mark_read_bad_input_is_a_clear_error(
    client: Client, body: bytes, content_type: str, code: str, message: str
) -> None:
    response = client.post(URL, body, content_type=content_type)
    assert response.status_code == 400
    answer: dict[str, Any] = response.json()
    assert answer["error"] == code
    assert message in answer["message"]


def test_mark_read_takes_json_only(client: Client) -> None:
    # Form fields are refused before anything is read (stream_app.requests.require_json).
    response = client.post(URL, {"ids": ["1"]})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_mark_read_unknown_ids_mark_nothing(client: Client) -> None:
    # Ids of notifications that do not exist (or were never sent) are left out of the answer.
    response = client.post(URL, {"ids": [999999]}, content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"read": []}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_demo_page_takes_get_only(db: None, method: str) -> None:
    # The test client skips the CSRF check: what answers is the view itself.
    response = getattr(Client(), method)("/stream/notifications/demo/")
    assert response.status_code == 405
    assert Client().get("/stream/notifications/demo/").status_code == 200

"""docs/how-to/drf.md, as written: a DRF view streams to a signed-in user, 403 for anyone else.

The view (tests/docs_examples/drf_views.py, included by the guide) runs in real daphne and
uvicorn servers; the events are published through the publish endpoint, as another service
would, and read with a real SSE client.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User

from stream_app.testing import EventStream
from tests.conftest import Server
from tests.test_notifications import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = {"DJANGO_SETTINGS_MODULE": "tests.docs_examples.settings"}


async def publish(server: Server, channel: str, data: object) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{server.url}/stream/publish/",
            json={"channel": channel, "data": data, "event": "note"},
            headers={"Authorization": "Bearer test-token"},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_drf_stream_anonymous_403_user_gets_own_events_and_resumes(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = await sync_to_async(server_factory)(kind, EXAMPLES)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(
            f"{server.url}/api/events/", headers={"Accept": "text/event-stream"}
        )
    # DRF's own answer: SessionAuthentication has no WWW-Authenticate challenge, so 403.
    assert response.status_code == 403
    assert response.json() == {"detail": "Authentication credentials were not provided."}

    alice = await User.objects.acreate_user("alice", password="pw")
    bob = await User.objects.acreate_user("bob", password="pw")
    cookie = await sync_to_async(session_cookie)(alice)
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    url = f"{server.url}/api/events/"

    async with EventStream(url, headers=headers, timeout=30) as stream:
        assert stream.status_code == 200
        assert stream.response is not None
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        ready = await stream.next_event()
        assert (ready.event, json.loads(ready.data)) == ("ready", {"username": "alice"})
        first = await publish(server, f"user:{alice.pk}", {"n": 1})
        await publish(server, f"user:{bob.pk}", {"n": "not for alice"})
        await publish(server, f"user:{alice.pk}", {"n": 2})
        events = await stream.events(2)
    assert [(e.event, json.loads(e.data)) for e in events] == [
        ("note", {"n": 1}),
        ("note", {"n": 2}),
    ]
    assert events[0].id == first

    # A reconnect with Last-Event-ID replays what was published meanwhile, through subscribe.
    await publish(server, f"user:{alice.pk}", {"n": 3})
    async with EventStream(url, headers={**headers, "Last-Event-ID": first}) as stream:
        replayed = await stream.events(3)
    assert [(e.event, json.loads(e.data)) for e in replayed] == [
        ("note", {"n": 2}),
        ("note", {"n": 3}),
        ("ready", {"username": "alice"}),
    ]

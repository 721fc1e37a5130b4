"""docs/how-to/cors.md, as written: a page of another origin reads a user's private stream.

Headless Chromium loads tests/docs_examples/cors_page.html from one origin (a static file
server on its own port) and opens ``EventSource(url, {withCredentials: true})`` to a real
uvicorn server of another origin, configured with django-cors-headers as the guide says
(tests/docs_examples/settings.py). The user's session cookie belongs to the server's origin:
the private channel ``user:<pk>`` answers 403 without it, so an event there proves the
browser sent it. A page whose origin is not allowed gets nothing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, Server
from tests.test_notifications import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

PAGES = Path(__file__).resolve().parent / "docs_examples"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_origins() -> Iterator[list[str]]:
    """Two static file servers (two origins) serving tests/docs_examples/."""
    handler = functools.partial(QuietHandler, directory=str(PAGES))
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for httpd in servers:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{httpd.server_address[1]}" for httpd in servers]
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_cors_eventsource_with_credentials_reads_private_stream(
    server_factory: Callable[..., Server],
    page_origins: list[str],
    browser: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Playwright's sync API keeps an event loop set in this thread; the ORM calls here are
    # plain blocking calls with nothing else running on that loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    allowed, other = page_origins
    server = server_factory(
        "uvicorn",
        {"DJANGO_SETTINGS_MODULE": "tests.docs_examples.settings", "CORS_ALLOWED_ORIGINS": allowed},
    )
    alice = User.objects.create_user("alice", password="pw")
    stream = f"{server.url}/sse/?channel=user:{alice.pk}"

    context = browser.new_context()  # type: ignore[attr-defined]
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session_cookie(alice), "url": server.url}]
    )
    page = context.new_page()
    page.goto(f"{allowed}/cors_page.html?stream={stream}")
    page.wait_for_function("window.received.length === 1", timeout=15_000)
    httpx.post(
        f"{server.url}/stream/publish/",
        json={"channel": f"user:{alice.pk}", "data": {"text": "<b>hi</b>"}, "event": "note"},
        headers={"Authorization": "Bearer test-token"},
        timeout=30,
    ).raise_for_status()
    page.wait_for_function("window.received.length === 2", timeout=15_000)
    (ready, ready_data), note = page.evaluate("window.received")
    assert ready == "ready"
    assert f"user:{alice.pk}" in ready_data["channels"]
    assert note == ["note", {"text": "<b>hi</b>"}]
    assert page.inner_text("#events li") == "<b>hi</b>"

    # The same page from an origin the server does not allow: refused, nothing received.
    refused = context.new_page()
    refused.goto(f"{other}/cors_page.html?stream={stream}")
    refused.wait_for_function("window.failed", timeout=15_000)
    assert refused.evaluate("window.received") == []
    context.close()

"""Headless Chromium: staff send from the admin on one worker, a user sees the toast on another.

Static files are served to the browser from Django's staticfiles finders (as whitenoise or a
proxy would in production): the test servers do not serve them themselves.
"""

from __future__ import annotations

import mimetypes
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders

from stream_app.models import Notification, NotificationSend
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, Server
from tests.test_notifications import Cluster, cluster, make_people, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]
__all__ = ["cluster"]

OUTPUT = Path(os.environ.get("STREAM_TEST_OUTPUT", tempfile.gettempdir())) / "notifications"


@pytest.fixture
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def serve_static(route: object) -> None:
    """Answer /static/<path> from the staticfiles finders."""
    url = route.request.url  # type: ignore[attr-defined]
    relative = url.split("/static/", 1)[1].split("?", 1)[0]
    found = finders.find(relative)
    if not found:
        route.fulfill(status=404, body="not found")  # type: ignore[attr-defined]
        return
    path = Path(found if isinstance(found, str) else found[0])
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    route.fulfill(status=200, body=path.read_bytes(), content_type=content_type)  # type: ignore[attr-defined]


def test_browser_admin_send_shows_toast_to_user_on_other_worker(
    cluster: Cluster, browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Playwright's sync API keeps an event loop set in this thread between its calls; the ORM
    # calls here are still plain blocking calls with nothing else running on that loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    people = make_people()
    admin_server, user_server = cluster.servers
    OUTPUT.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []

    user_context = browser.new_context(viewport={"width": 1000, "height": 700})  # type: ignore[attr-defined]
    staff_context = browser.new_context(viewport={"width": 1200, "height": 1100})  # type: ignore[attr-defined]
    for context in (user_context, staff_context):
        context.route("**/static/**", serve_static)
    user_context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session_cookie(people.bob),
                "url": user_server.url,
            }
        ]
    )
    user = user_context.new_page()
    user.on("pageerror", lambda exc: errors.append(f"user page: {exc}"))
    user.goto(f"{user_server.url}/stream/notifications/demo/")
    user.wait_for_selector("[data-stream-notifications][data-state='open']", timeout=10_000)

    staff = staff_context.new_page()
    staff.on("pageerror", lambda exc: errors.append(f"staff page: {exc}"))
    staff.goto(f"{admin_server.url}/admin/login/?next=/admin/stream_app/notification/add/")
    staff.fill("#id_username", "staff")
    staff.fill("#id_password", "pw")
    staff.click("input[type=submit]")
    staff.wait_for_selector("#id_title", timeout=10_000)
    # The live count sees the user's session on the other worker before anything is sent.
    staff.wait_for_selector("#sn-audience-count[data-count='1']", timeout=10_000)
    staff.fill("#id_title", "Deploy at 18:00")
    staff.fill("#id_body", "Expect **two minutes** of downtime.")
    staff.select_option("#id_body_format", "markdown")
    staff.select_option("#id_level", "warning")
    staff.click("input[name=_send]")
    staff.wait_for_selector(".messagelist .success", timeout=10_000)
    message = staff.inner_text(".messagelist .success")

    toast = user.wait_for_selector(".sn-toast", timeout=10_000)
    assert toast is not None
    toast_text = toast.inner_text()
    badge = user.inner_text(".sn-badge")
    user.screenshot(path=str(OUTPUT / "user-toast.png"))
    staff.screenshot(path=str(OUTPUT / "staff-admin-sent.png"), full_page=True)

    user.click(".sn-bell")
    user.wait_for_selector(".sn-list .sn-item", timeout=5_000)
    strong = user.inner_text(".sn-list .sn-item .sn-body strong")
    user.click(".sn-list .sn-mark-read")
    user.wait_for_function(
        "document.querySelector('[data-stream-notifications]').dataset.unread === '0'",
        timeout=5_000,
    )
    user.screenshot(path=str(OUTPUT / "user-list-read.png"))
    user_context.close()
    staff_context.close()

    notification = Notification.objects.get(title="Deploy at 18:00")
    assert "Deploy at 18:00" in toast_text
    assert "two minutes" in toast_text
    assert badge == "1"
    assert strong == "two minutes"
    assert "Sent “Deploy at 18:00” to 1 connected session (" in message
    assert notification.reach == 1
    assert NotificationSend.objects.get(notification=notification).sent_by_name == "staff"
    # Marked read from the page: no longer delivered on connect.
    assert notification.reads.filter(user=people.bob).exists()  # type: ignore[attr-defined]
    assert errors == []
    assert (OUTPUT / "user-toast.png").stat().st_size > 0
    assert (OUTPUT / "staff-admin-sent.png").stat().st_size > 0


# -- publisher-supplied fields never become markup -------------------------------------------

# Each would set window.__xss if it ever became markup or a followed link.
XSS = (
    '<img src=x onerror="window.__xss=(window.__xss||0)+1">'
    "<script>window.__xss=(window.__xss||0)+1</script>"
    '<svg onload="window.__xss=(window.__xss||0)+1"></svg>'
)
HOSTILE_NODES: list[Any] = [
    {"tag": "script", "children": ["window.__xss=1"]},
    {"tag": "img", "src": "x", "onerror": "window.__xss=1", "children": []},
    {
        "tag": "a",
        "href": "javascript:window.__xss=1",
        "onclick": "window.__xss=1",
        "children": ["a"],
    },
    {"tag": "p", "onclick": "window.__xss=1", "style": "color:red", "children": ["text " + XSS]},
    {"tag": "__proto__", "children": ["p"]},
    {"tag": "constructor", "children": ["c"]},
    {"tag": "strong", "children": [{"tag": "em", "children": [{"tag": "iframe", "src": "x"}]}]},
]
# Links a publisher may send; only the last two may become an href.
BAD_LINKS = [
    "javascript:window.__xss=1",
    "JaVaScRiPt:window.__xss=1",
    " javascript:window.__xss=1",
    "\tjavascript:window.__xss=1",
    "java\tscript:window.__xss=1",
    "\x01javascript:window.__xss=1",
    "data:text/html,<script>window.__xss=1</script>",
    "vbscript:msgbox(1)",
    "//evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "/\t/evil.example/",
    "/\n/evil.example/",
    "https:evil.example",
    "https://",
]
GOOD_LINKS = ["/inbox/3/", "https://example.com/a?b=1"]


def hostile_events(user_id: int) -> list[dict[str, Any]]:
    """Notification payloads as a publisher could send them through ``stream/publish/``."""
    everything = {
        "id": "1" + XSS,
        "title": "T1 " + XSS,
        "body": "B1 " + XSS,
        "html": XSS,
        "body_nodes": HOSTILE_NODES,
        "level": 'info" onmouseover="window.__xss=1',
        "link": "javascript:window.__xss=1",
        "channel": XSS,
        "sent_at": XSS,
        "expires_at": XSS,
    }
    # An older producer: HTML and plain text, no structured body.
    html_only = {"id": 2, "title": "T2", "body": "B2 " + XSS, "html": XSS, "level": "warning"}
    links = [
        {
            "id": 100 + index,
            "title": f"L{index}",
            "body_nodes": [{"tag": "a", "href": link, "children": [f"inline {index}"]}],
            "level": "info",
            "link": link,
            "sent_at": "2026-01-01T00:00:00+00:00",
        }
        for index, link in enumerate(BAD_LINKS + GOOD_LINKS)
    ]
    return [everything, html_only, *links]


INSPECT_UI = """() => {
  const areas = Array.from(document.querySelectorAll('.sn-list, .sn-toasts'));
  const all = areas.flatMap((area) => Array.from(area.querySelectorAll('*')));
  return {
    flag: window.__xss === undefined ? null : String(window.__xss),
    tags: Array.from(new Set(all.map((el) => el.tagName.toLowerCase()))).sort(),
    handlers: all.flatMap((el) => el.getAttributeNames().filter((n) => /^on|^style$/i.test(n))),
    hrefs: all.filter((el) => el.hasAttribute('href')).map((el) => el.getAttribute('href')),
    classes: all.flatMap((el) => Array.from(el.classList)),
    items: Array.from(document.querySelectorAll('.sn-list .sn-item')).map((el) => el.innerText),
  };
}"""


def test_browser_hostile_notification_fields_stay_text(
    uvicorn_server: Server, browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    bob = User.objects.create_user("bob", password="pw")
    cookie = session_cookie(bob)
    events = hostile_events(bob.pk)
    errors: list[str] = []
    context = browser.new_context()  # type: ignore[attr-defined]
    context.route("**/static/**", serve_static)
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": uvicorn_server.url}]
    )
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{uvicorn_server.url}/stream/notifications/demo/")
    page.wait_for_selector("[data-stream-notifications][data-state='open']", timeout=10_000)
    with httpx.Client(timeout=10) as client:
        for event in events:
            response = client.post(
                f"{uvicorn_server.url}/stream/publish/",
                json={"channel": f"user:{bob.pk}", "event": "notification", "data": event},
                headers={"Authorization": "Bearer test-token"},
            )
            assert response.status_code == 201, response.text
    page.wait_for_function(
        f"document.querySelectorAll('.sn-toasts .sn-toast').length === {len(events)}",
        timeout=10_000,
    )
    page.click(".sn-bell")
    page.wait_for_function(
        f"document.querySelectorAll('.sn-list .sn-item').length === {len(events)}",
        timeout=5_000,
    )
    seen = page.evaluate(INSPECT_UI)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "hostile-fields.png"))
    context.close()

    assert seen["flag"] is None
    assert set(seen["tags"]) <= {"a", "br", "button", "code", "div", "em", "li", "p", "strong"}
    assert seen["handlers"] == []
    assert all(re.fullmatch(r"sn-[a-z-]+", name) for name in seen["classes"]), seen["classes"]
    assert set(seen["hrefs"]) == set(GOOD_LINKS)
    items = "\n".join(seen["items"])
    assert "T1 " + XSS in items
    assert "text " + XSS in items
    assert "B2 " + XSS in items
    assert errors == []

"""The chat page's layout with the notification UI, in headless Chromium on a real server.

Toasts must never cover the composer (the input at its tallest, Send, Stop) nor the header's
buttons, on a desktop and on a phone; the bell must be an icon, not a dot. Screenshots go to
``$STREAM_TEST_OUTPUT/screenshots`` (default: the system temp directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from playwright.async_api import Browser, Page

from tests.conftest import Server, start_server
from tests.test_chat_browser import browser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
__all__ = ["browser"]

SHOTS = Path(os.environ.get("STREAM_TEST_OUTPUT", tempfile.gettempdir())) / "screenshots"
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
# What a toast may never cover.
CONTROLS = ["#input", "#send", "#stop", "#composer", ".bar .new button", ".sn-bell"]
BURST = 8


@pytest.fixture(scope="module")
def slow_server(django_db_setup: None) -> Iterator[Server]:
    """The offline model at 5 tokens/s: an answer streams (Stop shown) for the whole test."""
    server = start_server(
        "uvicorn", {"STREAM_OFFLINE_RATE": "5", "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    )
    yield server
    server.stop()


async def notify(server: Server, count: int) -> None:
    """Broadcast ``count`` notifications with long titles to the public channel."""
    token = settings.STREAM_APP["PUBLISH_TOKEN"]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for i in range(count):
            data = {
                "id": 900 + i,
                "title": f"Maintenance window {i}: the service restarts tonight at 23:00 UTC",
                "level": "warning",
                "sent_at": datetime.now(UTC).isoformat(),
            }
            response = await client.post(
                "/stream/publish/",
                json={"channel": "notifications", "event": "notification", "data": data},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 201, response.text


def intersect(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two bounding boxes overlap (touching edges do not)."""
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def inside(box: dict[str, float], frame: dict[str, float]) -> bool:
    """Whether ``box`` lies entirely within ``frame``."""
    return (
        frame["x"] <= box["x"]
        and box["x"] + box["width"] <= frame["x"] + frame["width"]
        and frame["y"] <= box["y"]
        and box["y"] + box["height"] <= frame["y"] + frame["height"]
    )


def clip(box: dict[str, float], frame: dict[str, float]) -> dict[str, float] | None:
    """The part of ``box`` inside ``frame`` (what an ``overflow: hidden`` frame shows)."""
    x, y = max(box["x"], frame["x"]), max(box["y"], frame["y"])
    right = min(box["x"] + box["width"], frame["x"] + frame["width"])
    bottom = min(box["y"] + box["height"], frame["y"] + frame["height"])
    if right <= x or bottom <= y:
        return None
    return {"x": x, "y": y, "width": right - x, "height": bottom - y}


async def boxes(page: Page, selector: str) -> list[dict[str, float]]:
    """Bounding boxes of the visible elements matching ``selector``."""
    found = []
    for element in await page.query_selector_all(selector):
        box = await element.bounding_box()
        if box is not None and await element.is_visible():
            found.append(box)
    return found


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_toasts_never_cover_the_composer_or_the_buttons(
    browser: Browser, slow_server: Server, viewport: str
) -> None:
    width, height = VIEWPORTS[viewport]
    context = await browser.new_context(viewport={"width": width, "height": height})
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{slow_server.url}/")
        await page.wait_for_selector("[data-stream-notifications][data-state='open']")
        # An answer streaming (Stop shown) and a long draft (the input at its tallest).
        await page.fill("#input", "What is a generation?")
        await page.press("#input", "Enter")
        await page.wait_for_selector("#stop:visible")
        await page.fill("#input", "\n".join(f"line {n} of a long draft" for n in range(20)))
        # A burst: more toasts than fit between the bar and the composer.
        await notify(slow_server, BURST)
        await page.wait_for_function(f"document.querySelectorAll('.sn-toast').length === {BURST}")
        await page.wait_for_timeout(300)  # the toasts' entrance animation
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"chat-toasts-{viewport}.png"))
        # What shows of each toast: the part inside their box (it clips what does not fit).
        frame = (await boxes(page, ".sn-toasts"))[0]
        shown = [clip(box, frame) for box in await boxes(page, ".sn-toast")]
        toasts = [box for box in shown if box is not None]
        assert len(toasts) >= 3, "room for at least three toasts"
        for toast in toasts:
            # Inside the window, so that it can be read and dismissed.
            assert inside(toast, {"x": 0, "y": 0, "width": width, "height": height})
        covered: dict[str, Any] = {}
        for selector in CONTROLS:
            controls = await boxes(page, selector)
            assert controls, f"{selector} is not on the page"
            for control in controls:
                if any(intersect(toast, control) for toast in toasts):
                    covered[selector] = control
        assert covered == {}, f"toasts {toasts} cover {covered}"
    finally:
        await context.close()
    assert errors == [], errors


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_bell_is_an_icon_not_a_dot(
    browser: Browser, slow_server: Server, viewport: str
) -> None:
    width, height = VIEWPORTS[viewport]
    context = await browser.new_context(viewport={"width": width, "height": height})
    try:
        page = await context.new_page()
        await page.goto(f"{slow_server.url}/")
        await page.wait_for_selector(".sn-bell svg")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.locator(".bar").screenshot(path=str(SHOTS / f"chat-bell-{viewport}.png"))
        icon = await page.locator(".sn-bell svg").bounding_box()
        bell = await page.locator(".sn-bell").bounding_box()
    finally:
        await context.close()
    assert icon is not None
    assert bell is not None
    assert min(icon["width"], icon["height"]) >= 16, icon
    # The icon sits inside its round button.
    assert inside(icon, bell)

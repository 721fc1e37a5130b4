"""The demo chat page in headless Chromium (Debian's, driven by Playwright), on a real server.

Screenshots go to ``$STREAM_TEST_OUTPUT/screenshots`` (default: the system temp directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, Server, start_server
from tests.fake_openai import FakeOpenAI
from tests.llm_support import expected_tokens, fake_openai, llm_env  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HAVE_CHROMIUM = Path(CHROMIUM).exists()
SHOTS = Path(os.environ.get("STREAM_TEST_OUTPUT", tempfile.gettempdir())) / "screenshots"
ANSWER = ".message.assistant"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium (Playwright's async API: its loop is the test's)."""
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
def chat_server(django_db_setup: None, fake_openai: FakeOpenAI) -> Iterator[Server]:  # noqa: F811
    """A daphne server whose model is the fake upstream."""
    server = start_server("daphne", llm_env(fake_openai))
    yield server
    server.stop()


@pytest.fixture
async def page(browser: Browser, chat_server: Server) -> AsyncIterator[Page]:
    """A fresh visitor (its own cookies, so its own conversation) on the chat page."""
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    await tab.goto(f"{chat_server.url}/")
    await tab.wait_for_selector("#input")
    yield tab
    await context.close()
    assert errors == [], errors


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def ask(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def answer_text(page: Page) -> str:
    return str(await page.locator(f"{ANSWER} .body").last.inner_text())


async def wait_finished(page: Page, timeout: float = 20_000) -> None:
    await page.wait_for_selector(f"{ANSWER}:not(.streaming)", timeout=timeout)
    await page.wait_for_function(
        "() => !document.querySelector('.message.assistant.streaming')", timeout=timeout
    )


async def text_longer_than(page: Page, size: int) -> None:
    await page.wait_for_function(
        "size => (document.querySelector('.message.assistant .body') || {}).innerText?.length"
        " > size",
        arg=size,
    )


async def test_chat_browser_streams_an_answer_token_by_token(page: Page) -> None:
    await ask(page, "[tokens=80] [delay=25] hello")
    await page.wait_for_selector(f"{ANSWER}.streaming")
    await text_longer_than(page, 20)
    partial = await answer_text(page)
    assert await page.locator(f"{ANSWER}.streaming").count() == 1
    assert await page.locator("#state").inner_text() == "Streaming"
    assert await page.locator("#stop").is_visible()
    await shot(page, "chat-streaming")
    await wait_finished(page)
    final = await answer_text(page)
    assert final.strip() == expected_tokens(80).strip()
    assert len(partial) < len(final)
    meta = await page.locator(f"{ANSWER} .meta").last.inner_text()
    assert "TTFT" in meta
    assert "tok/s" in meta
    assert await page.locator("#state").inner_text() == "Idle"
    assert await page.locator("#stop").is_hidden()
    question = await page.locator(".message.user .body").last.inner_text()
    assert question.strip() == "[tokens=80] [delay=25] hello"
    await shot(page, "chat-done")


async def test_chat_browser_stop_button_cancels_the_answer(
    page: Page,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    await ask(page, "[tokens=3000] [delay=20] long answer")
    await text_longer_than(page, 12)
    call = fake_openai.last_call()
    pressed = time.monotonic()
    await page.click("#stop")
    await wait_finished(page)
    assert "stopped" in await page.locator(f"{ANSWER} .meta").last.inner_text()
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 5.0)
    assert closed is not None
    assert closed - pressed < 2.0
    assert (await answer_text(page)).startswith("t0 t1")
    await shot(page, "chat-stopped")


async def test_chat_browser_escape_stops_and_shift_enter_adds_a_line(page: Page) -> None:
    await page.click("#input")
    await page.keyboard.type("[tokens=3000]")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("[delay=20]")
    assert await page.input_value("#input") == "[tokens=3000]\n[delay=20]"
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"{ANSWER}.streaming")
    await text_longer_than(page, 6)
    await page.keyboard.press("Escape")
    await wait_finished(page)
    assert "stopped" in await page.locator(f"{ANSWER} .meta").last.inner_text()
    assert await page.evaluate("document.activeElement.id") == "input"


async def test_chat_browser_reload_mid_answer_resumes(page: Page) -> None:
    await ask(page, "[tokens=200] [delay=20] resume me")
    await text_longer_than(page, 30)
    await page.reload()
    await page.wait_for_selector(f"{ANSWER}.streaming", timeout=5000)
    await shot(page, "chat-resumed")
    await wait_finished(page)
    assert (await answer_text(page)).strip() == expected_tokens(200).strip()
    assert "TTFT" in await page.locator(f"{ANSWER} .meta").last.inner_text()
    assert await page.locator(".message").count() == 2
    # Reload once more: the finished answer now comes from the database.
    await page.reload()
    await page.wait_for_selector(ANSWER)
    assert (await answer_text(page)).strip() == expected_tokens(200).strip()


async def test_chat_browser_xss_payload_stays_text(page: Page) -> None:
    await ask(page, "[xss] show me html")
    await wait_finished(page)
    body = page.locator(f"{ANSWER} .body").last
    text = await body.inner_text()
    assert '<img src=x onerror="window.__xss=1">' in text
    assert "<script>window.__xss=2</script>" in text
    assert "[a link](javascript:window.__xss=3)" in text
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("#messages img, #messages script, #messages iframe").count() == 0
    assert await page.locator("#messages a").count() == 0
    assert await body.locator("strong").inner_text() == "bold"
    await shot(page, "chat-xss")
    await page.reload()
    await page.wait_for_selector(ANSWER)
    assert await page.evaluate("window.__xss") is None
    assert "<script>window.__xss=2</script>" in await answer_text(page)


async def test_chat_browser_upstream_error_is_a_chat_message(page: Page) -> None:
    await ask(page, "[status=429] anyone there?")
    alert = await page.wait_for_selector(f"{ANSWER}.error [role=alert]")
    assert alert is not None
    message = await alert.inner_text()
    assert "rate limiting" in message
    assert "rate_limited" in message
    assert await page.locator("#send").is_enabled()
    await shot(page, "chat-error")


async def test_chat_browser_phone_width_has_no_horizontal_scroll(
    browser: Browser, chat_server: Server
) -> None:
    context = await browser.new_context(
        viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True
    )
    try:
        page = await context.new_page()
        await page.goto(f"{chat_server.url}/")
        await ask(page, "[text=A_very_long_word_without_spaces_that_must_wrap_inside_the_bubble]")
        await wait_finished(page)
        width: Any = await page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1]
        box = await page.locator("#composer").bounding_box()
        assert box is not None
        assert box["y"] + box["height"] <= 700 + 1
        assert await page.locator("#send").is_visible()
        await shot(page, "chat-phone")
    finally:
        await context.close()


async def test_chat_browser_offline_model_is_announced(
    browser: Browser, server_factory: Any
) -> None:
    server = server_factory("daphne", {"STREAM_OFFLINE_RATE": "400"})
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{server.url}/")
        assert "offline model" in await page.locator("#offline-banner").inner_text()
        await ask(page, "What is a generation?")
        await wait_finished(page)
        assert "offline model" in await answer_text(page)
        assert await page.locator(f"{ANSWER} pre code").count() == 1
        await shot(page, "chat-offline")
    finally:
        await context.close()


async def test_chat_browser_cut_connection_resumes_from_last_event_id(page: Page) -> None:
    async def cut(route: Any) -> None:
        # Deliver the answer's first frames only, as if the network dropped mid-answer.
        response = await route.fetch()
        frames = (await response.body()).split(b"\n\n")
        assert len(frames) > 12
        await route.fulfill(response=response, body=b"\n\n".join(frames[:5]) + b"\n\n")

    await page.route("**/chat/send/", cut)
    resumed: list[str] = []
    page.on(
        "request",
        lambda request: resumed.append(request.url) if "/stream/" in request.url else None,
    )
    await ask(page, "[tokens=60] [delay=20] cut me off")
    await wait_finished(page)
    assert (await answer_text(page)).strip() == expected_tokens(60).strip()
    assert any("lastEventId=" in url for url in resumed), resumed


async def test_stream_js_parser_follows_the_event_stream_rules(page: Page) -> None:
    events = await page.evaluate(
        """() => {
          const out = [];
          const parser = new StreamApp.Parser((event) => out.push(event));
          parser.feed("\\ufeffdata: a\\r");
          parser.feed("\\ndata: b\\r\\n\\r\\n: a comment\\nevent: x\\nid: 1\\ndata:  two\\n\\n");
          parser.feed("id: bad\\u0000id\\ndata: c\\n\\nevent: y\\n\\ndata: never");
          return out;
        }"""
    )
    assert events == [
        {"type": "message", "data": "a\nb", "lastEventId": None},
        {"type": "x", "data": " two", "lastEventId": "1"},
        {"type": "message", "data": "c", "lastEventId": "1"},
    ]


async def test_stream_js_connect_stops_on_204_after_backing_off(page: Page) -> None:
    result = await page.evaluate(
        """() => new Promise((resolve) => {
          const states = [];
          const started = performance.now();
          StreamApp.connect("/chat/generations/" + "0".repeat(32) + "/stream/", {
            onState: (state) => states.push(state),
            onGone: () => resolve({states, ms: performance.now() - started}),
          });
          setTimeout(() => resolve({states, ms: -1}), 8000);
        })"""
    )
    assert result["ms"] > 0, result
    assert result["states"][0] == "connecting"
    assert "reconnecting" in result["states"]
    assert result["states"][-1] == "closed"


MARKDOWN_LINKS = [
    ("[x](/inbox/)", "/inbox/"),
    ("[x](https://example.com/a)", "https://example.com/a"),
    ("[x](mailto:a@example.com)", "mailto:a@example.com"),
    ("[x](#top)", "#top"),
    ("[x](javascript:alert(1))", None),
    ("[x](JaVaScRiPt:alert)", None),
    ("[x](data:text/html,x)", None),
    ("[x](vbscript:x)", None),
    ("[x](//evil.example/)", None),
    # Browsers read a backslash as a slash: /\host is //host, another site.
    ("[x](/\\evil.example/)", None),
    ("[x](/\\/evil.example/)", None),
    ("[x](https:\\\\evil.example/)", None),
    ("[x](https://)", None),
    ("[x](\x01javascript:alert)", None),
]


async def test_markdown_js_makes_links_of_safe_urls_only(page: Page) -> None:
    hrefs = await page.evaluate(
        """(sources) => sources.map((source) => {
          const box = document.createElement("div");
          box.appendChild(Markdown.render(source));
          const link = box.querySelector("a");
          return link ? link.getAttribute("href") : null;
        })""",
        [source for source, _ in MARKDOWN_LINKS],
    )
    assert dict(zip([s for s, _ in MARKDOWN_LINKS], hrefs, strict=True)) == dict(MARKDOWN_LINKS)


async def test_chat_browser_follows_and_cancels_on_this_site_only(page: Page) -> None:
    # Whoever may publish on a generation's channel can send "generation" events: their URLs
    # must not lead the page (its CSRF token, in the cancel request) to another site.
    elsewhere: list[str] = []

    async def other_site(route: Any) -> None:
        elsewhere.append(route.request.url)
        await route.fulfill(status=200, content_type="text/event-stream", body="retry: 60000\n\n")

    async def hostile_answer(route: Any) -> None:
        meta = {
            "id": "x",
            "stream_url": "http://evil.invalid/stream/",
            "cancel_url": "http://evil.invalid/cancel/",
        }
        body = f"event: generation\ndata: {json.dumps(meta)}\n\n"
        body += 'event: token\ndata: {"text": "partial"}\n\n'
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    await page.context.route("http://evil.invalid/**", other_site)
    await page.route("**/chat/send/", hostile_answer)
    await ask(page, "anything")
    await page.wait_for_function(
        "() => (document.querySelector('.message.assistant .body') || {}).innerText"
        "?.includes('partial')"
    )
    await page.keyboard.press("Escape")
    try:
        await wait_finished(page, timeout=10_000)
    finally:
        assert elsewhere == []
    assert "The connection was lost." in await answer_text(page)

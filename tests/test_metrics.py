"""Metrics and health endpoints, against real servers (and in-process for the edge cases)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from stream_app import metrics
from stream_app.testing import EventStream
from tests.conftest import RedisServer, Server, free_port

TOKEN = {"Authorization": "Bearer test-token"}
Key = tuple[str, tuple[tuple[str, str], ...]]


class Samples(dict[Key, float]):
    """Samples of one scrape, keyed by sample name and sorted labels."""

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 when the scrape did not have it."""
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


def parse(text: str) -> Samples:
    """Parse the Prometheus text format with prometheus-client's own parser."""
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(base_url: str, headers: dict[str, str] | None = None) -> Samples:
    """GET ``/stream/metrics/`` of one worker and parse it."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base_url}/stream/metrics/", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def wait_for_metric(
    base_url: str, check: Callable[[Samples], bool], timeout: float = 5
) -> Samples:
    """Scrape until ``check`` holds (bounded); returns the last scrape, which satisfies it."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(base_url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"metrics never satisfied the check: {dict(samples)}")
        await asyncio.sleep(0.05)


async def open_stream(base_url: str, query: str, **headers: str) -> EventStream:
    """Open a stream and read up to its ``ready`` event (it is subscribed from then on)."""
    stream = await EventStream(f"{base_url}/sse/?{query}", headers=headers).open()
    assert stream.status_code == 200, await stream.response.aread()  # type: ignore[union-attr]
    while (await stream.next_event()).event != "ready":
        pass
    return stream


async def publish(base_url: str, channel: str, data: Any) -> httpx.Response:
    """POST a broadcast to the publish endpoint with the test token."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{base_url}/stream/publish/", json={"channel": channel, "data": data}, headers=TOKEN
        )


@pytest.fixture
def redis_worker(server_factory: Callable[..., Server], redis_env: dict[str, str]) -> Server:
    """A uvicorn worker on the Redis backend, with a short queue and a small history."""
    env = {**redis_env, "STREAM_APP_JSON": '{"MAX_QUEUE": 4, "HISTORY_SIZE": 50}'}
    return server_factory("uvicorn", env)


# -- against a real server ---------------------------------------------------------------------


@pytest.mark.slow
async def test_metrics_sessions_per_channel_follow_opens_and_closes(redis_worker: Server) -> None:
    before = await scrape(redis_worker.url)
    assert before.value("stream_sessions_open") == 0
    alpha = [await open_stream(redis_worker.url, "channel=alpha") for _ in range(2)]
    beta = await open_stream(redis_worker.url, "channel=beta&channel=alpha")
    try:
        now = await scrape(redis_worker.url)
        assert now.value("stream_sessions_open") == 3
        assert now.value("stream_channel_sessions", channel="alpha") == 3
        assert now.value("stream_channel_sessions", channel="beta") == 1
        # DEFAULT_CHANNELS puts every stream on "news" too.
        assert now.value("stream_channel_sessions", channel="news") == 3
        opened = now.value("stream_sessions_opened_total")
        assert opened - before.value("stream_sessions_opened_total") == 3
        await beta.close()
        after = await wait_for_metric(
            redis_worker.url, lambda s: s.value("stream_sessions_open") == 2
        )
        assert after.value("stream_channel_sessions", channel="beta") == 0
        assert after.value("stream_channel_sessions", channel="alpha") == 2
        assert (
            after.value("stream_sessions_closed_total")
            == before.value("stream_sessions_closed_total") + 1
        )
    finally:
        for stream in alpha:
            await stream.close()
    await wait_for_metric(redis_worker.url, lambda s: s.value("stream_sessions_open") == 0)


@pytest.mark.slow
async def test_metrics_count_published_and_delivered_events(redis_worker: Server) -> None:
    streams = [await open_stream(redis_worker.url, "channel=alpha") for _ in range(3)]
    try:
        before = await scrape(redis_worker.url)
        for i in range(4):
            assert (await publish(redis_worker.url, "alpha", i)).status_code == 201
        for stream in streams:
            assert [(await stream.next_event()).data for _ in range(4)] == ["0", "1", "2", "3"]
        after = await scrape(redis_worker.url)
    finally:
        for stream in streams:
            await stream.close()
    published = after.value("stream_events_published_total")
    assert published - before.value("stream_events_published_total") == 4
    # Each event queued once per recipient (no keep-alive is due: KEEP_ALIVE is 10 s).
    delivered = after.value("stream_events_delivered_total")
    assert delivered - before.value("stream_events_delivered_total") == 12


@pytest.mark.slow
async def test_metrics_count_a_slow_consumer_that_was_closed(redis_worker: Server) -> None:
    stuck = await open_stream(redis_worker.url, "channel=beta")
    try:
        before = await scrape(redis_worker.url)
        assert before.value("stream_channel_sessions", channel="beta") == 1
        # The client stops reading: once the socket buffers are full, uvicorn's send waits, the
        # session's queue (MAX_QUEUE 4) fills, and the next event closes the session.
        payload = "x" * 200_000
        for _ in range(300):
            assert (await publish(redis_worker.url, "beta", payload)).status_code == 201
            now = await scrape(redis_worker.url)
            if now.value("stream_slow_consumers_total") > before.value(
                "stream_slow_consumers_total"
            ):
                break
        else:
            pytest.fail("the non-reading client was never closed as a slow consumer")
        assert (
            now.value("stream_slow_consumers_total")
            == before.value("stream_slow_consumers_total") + 1
        )
        await wait_for_metric(
            redis_worker.url, lambda s: s.value("stream_channel_sessions", channel="beta") == 0
        )
    finally:
        await stuck.close()


@pytest.mark.slow
async def test_metrics_count_replay_hits_and_resets(redis_worker: Server) -> None:
    stream = await open_stream(redis_worker.url, "channel=alpha")
    mark = (await publish(redis_worker.url, "alpha", "mark")).json()["id"]
    assert (await stream.next_event()).id == mark
    await stream.close()
    before = await scrape(redis_worker.url)
    hit = await open_stream(redis_worker.url, "channel=alpha", **{"Last-Event-ID": mark})
    unknown = await EventStream(
        f"{redis_worker.url}/sse/?channel=alpha", headers={"Last-Event-ID": "not-an-id"}
    ).open()
    try:
        assert (await unknown.next_event()).event == "reset"
        after = await scrape(redis_worker.url)
    finally:
        await hit.close()
        await unknown.close()
    assert after.value("stream_replay_hits_total") == before.value("stream_replay_hits_total") + 1
    assert after.value("stream_replay_resets_total") == (
        before.value("stream_replay_resets_total") + 1
    )


@pytest.mark.slow
async def test_metrics_count_backend_reconnects(
    redis_worker: Server, redis_server: RedisServer
) -> None:
    stream = await open_stream(redis_worker.url, "channel=alpha")
    try:
        before = await scrape(redis_worker.url)
        assert before.value("stream_backend_connected", backend="RedisBackend") == 1
        client = redis.Redis(port=redis_server.port)
        try:
            client.client_kill_filter(_type="pubsub")
        finally:
            client.close()
        reconnects = before.value("stream_backend_reconnects_total", backend="RedisBackend")
        await wait_for_metric(
            redis_worker.url,
            lambda s: (
                s.value("stream_backend_reconnects_total", backend="RedisBackend") > reconnects
                and s.value("stream_backend_connected", backend="RedisBackend") == 1
            ),
        )
        # Still delivering after the reconnect.
        sent = (await publish(redis_worker.url, "alpha", "after")).json()["id"]
        assert (await stream.next_event()).id == sent
    finally:
        await stream.close()


@pytest.mark.slow
async def test_metrics_count_publish_errors_when_redis_is_unreachable(
    server_factory: Callable[..., Server],
) -> None:
    env = {"STREAM_BACKEND": "redis", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    worker = server_factory("daphne", env)
    response = await publish(worker.url, "alpha", "lost")
    assert response.status_code == 503
    samples = await scrape(worker.url)
    assert samples.value("stream_publish_errors_total") == 1
    assert samples.value("stream_events_published_total") == 0
    assert "event=publish_error channel=alpha error=BackendUnavailable message=" in (
        worker.log.read_text()
    )


@pytest.mark.slow
async def test_health_with_redis_up_answers_ok(redis_worker: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{redis_worker.url}/stream/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "backend": "RedisBackend", "sessions": 0}
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.slow
async def test_health_with_redis_unreachable_answers_503(
    server_factory: Callable[..., Server],
) -> None:
    env = {"STREAM_BACKEND": "redis", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    worker = server_factory("uvicorn", env)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{worker.url}/stream/health/")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["reason"]) == ("unavailable", "backend_unreachable")
    # Within HEALTH_TIMEOUT (2 s) even though nothing answers.
    assert time.monotonic() - started < 3
    assert "event=health_failed backend=RedisBackend reason=backend_unreachable" in (
        worker.log.read_text()
    )


@pytest.mark.slow
async def test_health_answers_503_while_redis_is_down_and_200_once_it_is_back(
    redis_worker: Server, redis_server: RedisServer
) -> None:
    url = f"{redis_worker.url}/stream/health/"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url)).status_code == 200
        redis_server.stop()
        try:
            assert (await client.get(url)).status_code == 503
        finally:
            redis_server.start()
        # The client's pooled connection died with Redis: allow a probe or two to notice.
        deadline = time.monotonic() + 5
        while (await client.get(url)).status_code != 200:
            assert time.monotonic() < deadline, "health never recovered after Redis came back"
            await asyncio.sleep(0.1)


# -- in-process edge cases ---------------------------------------------------------------------


async def test_metrics_view_without_prometheus_client_answers_501(
    monkeypatch: pytest.MonkeyPatch, async_client: Any
) -> None:
    # None in sys.modules makes "import prometheus_client" raise ImportError; the registration
    # state is restored at teardown.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setattr(metrics, "_histograms", None)
    monkeypatch.setattr(metrics, "_available", None)
    response = await async_client.get("/stream/metrics/")
    assert response.status_code == 501
    assert response.json()["error"] == "metrics_unavailable"
    assert "pip install" in response.json()["message"]
    # And the LLM hook is a no-op rather than an error.
    metrics.observe_generation(0.5, 30.0)
    assert metrics._available is False


async def test_metrics_view_with_a_token_refuses_other_callers(
    settings: Any, async_client: Any
) -> None:
    settings.STREAM_APP = {**settings.STREAM_APP, "METRICS_TOKEN": "scrape-me"}
    assert (await async_client.get("/stream/metrics/")).status_code == 401
    wrong = await async_client.get("/stream/metrics/", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    right = await async_client.get(
        "/stream/metrics/", headers={"Authorization": "Bearer scrape-me"}
    )
    assert right.status_code == 200
    assert b"stream_sessions_open " in right.content


async def test_metrics_view_refuses_post(async_client: Any) -> None:
    assert (await async_client.post("/stream/metrics/")).status_code == 405


async def test_observe_generation_fills_both_histograms(async_client: Any) -> None:
    before = parse((await async_client.get("/stream/metrics/")).content.decode())
    metrics.observe_generation(0.3, 42.0)
    metrics.observe_generation(None, 7.0)
    after = parse((await async_client.get("/stream/metrics/")).content.decode())

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("stream_generation_ttft_seconds_count") == 1
    assert delta("stream_generation_ttft_seconds_bucket", le="0.25") == 0
    assert delta("stream_generation_ttft_seconds_bucket", le="0.5") == 1
    assert delta("stream_generation_tokens_per_second_count") == 2
    assert delta("stream_generation_tokens_per_second_sum") == pytest.approx(49.0)
    assert delta("stream_generation_tokens_per_second_bucket", le="10.0") == 1


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        ({"news": 3, "alpha": 1}, {"news": 3, "alpha": 1}),
        ({"user:1": 1, "user:2": 2, "news": 1}, {"user:*": 3, "news": 1}),
        ({"generation:ab": 1, "generation:cd": 1}, {"generation:*": 2}),
    ],
)
def test_channel_labels_group_names_with_a_colon(
    snapshot: dict[str, int], expected: dict[str, int]
) -> None:
    assert metrics.channel_labels(snapshot) == expected


def test_channel_labels_past_the_cap_fold_the_smallest_into_star() -> None:
    snapshot = {f"c{i}": i + 1 for i in range(metrics.MAX_CHANNEL_LABELS + 10)}
    labels = metrics.channel_labels(snapshot)
    assert len(labels) == metrics.MAX_CHANNEL_LABELS
    assert sum(labels.values()) == sum(snapshot.values())
    # The largest channels keep their own label; the eleven smallest share "*".
    assert labels["*"] == sum(range(1, 12))
    assert "c0" not in labels
    assert f"c{metrics.MAX_CHANNEL_LABELS + 9}" in labels


async def test_health_while_shutting_down_answers_503(
    monkeypatch: pytest.MonkeyPatch, async_client: Any
) -> None:
    from stream_app import tasks

    assert (await async_client.get("/stream/health/")).status_code == 200
    monkeypatch.setitem(tasks._state, "shutting_down", True)
    response = await async_client.get("/stream/health/")
    assert response.status_code == 503
    assert response.json()["reason"] == "shutting_down"

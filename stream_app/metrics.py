"""Prometheus metrics: one collector that reads this process's counters at scrape time.

Nothing here runs per event: sessions and channels bump plain integers (``sessions.stats``) and
the collector turns them into metric families when Prometheus scrapes ``/stream/metrics/``.
Only the generation histograms are observed as things happen, once per generation.

Every figure is this process's own, so scrape each worker at its own address (never through the
load balancer, which would answer from a different worker each time) and sum in PromQL.

Metrics (``_total`` is added to counters by the exposition format):

- ``stream_sessions_open``: sessions streaming now.
- ``stream_channel_sessions{channel}``: sessions registered per channel. Names with a ``:``
  (``user:42``, ``generation:<uuid>``) are grouped by prefix (``user:*``) so that label
  cardinality stays bounded; past ``MAX_CHANNEL_LABELS`` labels the smallest groups are folded
  into ``channel="*"``.
- ``stream_sessions_opened_total`` / ``stream_sessions_closed_total``.
- ``stream_events_published_total``: broadcasts this process published through the backend;
  ``stream_publish_errors_total``: broadcasts the backend refused (Redis unreachable).
- ``stream_events_delivered_total``: frames queued to sessions (events and keep-alive comments).
- ``stream_slow_consumers_total``: sessions closed because their queue overflowed or a write
  stalled past its timeout.
- ``stream_replay_hits_total`` / ``stream_replay_resets_total``: reconnects whose
  ``Last-Event-ID`` was found in the history, and those that got a ``reset`` event instead.
- ``stream_backend_reconnects_total{backend}``, ``stream_backend_connected{backend}`` (Redis: the
  listener's connection; 0 until the first subscription starts it).
- ``stream_generation_ttft_seconds``, ``stream_generation_tokens_per_second``: histograms that
  LLM code feeds through ``observe_generation``.

prometheus-client is optional (``pip install django-stream-llm[metrics]``): without it the view
answers 501 and ``observe_generation`` does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .backends import get_backend
from .channels import channel_snapshot
from .conf import app_settings
from .permissions import bearer_matches
from .stats import stats

if TYPE_CHECKING:
    from prometheus_client import Histogram
    from prometheus_client.registry import Collector

__all__ = [
    "MAX_CHANNEL_LABELS",
    "StreamCollector",
    "channel_labels",
    "metrics_view",
    "observe_generation",
    "register",
]

MAX_CHANNEL_LABELS = 200
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TOKENS_PER_SECOND_BUCKETS = (1.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
UNAVAILABLE = (
    "prometheus-client is not installed: pip install 'django-stream-llm[metrics]' "
    "(or prometheus-client) to expose metrics"
)

_lock = threading.Lock()
_histograms: tuple[Histogram, Histogram] | None = None
# None: not tried yet; False: prometheus-client is missing (do not retry the import per call).
_available: bool | None = None


def channel_labels(snapshot: dict[str, int]) -> dict[str, int]:
    """Sessions per channel label: ``prefix:*`` for names with a colon, capped in number."""
    grouped: dict[str, int] = {}
    for name, count in snapshot.items():
        head, colon, _ = name.partition(":")
        label = f"{head}:*" if colon else name
        grouped[label] = grouped.get(label, 0) + count
    if len(grouped) <= MAX_CHANNEL_LABELS:
        return grouped
    ranked = sorted(grouped.items(), key=lambda item: (-item[1], item[0]))
    # "*" cannot be a channel name, so it cannot collide with a real one.
    kept = dict(ranked[: MAX_CHANNEL_LABELS - 1])
    kept["*"] = sum(count for _, count in ranked[MAX_CHANNEL_LABELS - 1 :])
    return kept


class StreamCollector:
    """Turns ``sessions.stats``, the channel registry and the backend into metric families."""

    def describe(self) -> Iterator[Any]:
        """The families this collector yields, without samples (read once at registration)."""
        return self._families(sample=False)

    def collect(self) -> Iterator[Any]:
        """The families with this process's current values (called at each scrape)."""
        return self._families(sample=True)

    def _families(self, *, sample: bool) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value if sample else None)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value if sample else None)

        yield gauge("stream_sessions_open", "Sessions streaming in this process.", stats.open)
        per_channel = GaugeMetricFamily(
            "stream_channel_sessions",
            "Sessions registered per channel in this process (prefix:* groups names with ':').",
            labels=["channel"],
        )
        if sample:
            for label, count in sorted(channel_labels(channel_snapshot()).items()):
                per_channel.add_metric([label], count)
        yield per_channel
        yield counter("stream_sessions_opened", "Sessions that started streaming.", stats.opened)
        yield counter("stream_sessions_closed", "Sessions that ended.", stats.closed)
        yield counter(
            "stream_events_published",
            "Broadcasts published through the backend by this process.",
            stats.events_published,
        )
        yield counter(
            "stream_publish_errors",
            "Broadcasts the backend could not publish (e.g. Redis unreachable).",
            stats.publish_errors,
        )
        yield counter(
            "stream_events_delivered",
            "Frames queued to sessions: events, plus keep-alive comments.",
            stats.events_queued,
        )
        yield counter(
            "stream_slow_consumers",
            "Sessions closed for a full queue or a stalled write.",
            stats.slow_consumers,
        )
        yield counter(
            "stream_replay_hits",
            "Reconnects whose Last-Event-ID was found in the history.",
            stats.replay_hits,
        )
        yield counter(
            "stream_replay_resets",
            "Reconnects that got a reset event (id unknown, history expired or unavailable).",
            stats.replay_resets,
        )
        reconnects = CounterMetricFamily(
            "stream_backend_reconnects",
            "Times the backend's listener lost its connection and had to connect again.",
            labels=["backend"],
        )
        connected = GaugeMetricFamily(
            "stream_backend_connected",
            "1 while the backend's listener is connected (0 before the first subscription).",
            labels=["backend"],
        )
        if sample:
            backend = get_backend()
            name = type(backend).__name__
            reconnects.add_metric([name], getattr(backend, "reconnects", 0))
            # Backends without a listener connection of their own (memory) are always "up".
            connected.add_metric([name], 1 if getattr(backend, "connected", True) else 0)
        yield reconnects
        yield connected


def register() -> bool:
    """Register the collector and the generation histograms in prometheus-client's default
    registry, once per process; False when prometheus-client is not installed."""
    global _histograms, _available
    if _histograms is not None:
        return True
    if _available is False:
        return False
    with _lock:
        if _histograms is not None:
            return True
        try:
            from prometheus_client import REGISTRY, Histogram
        except ImportError:
            _available = False
            return False
        REGISTRY.register(cast("Collector", StreamCollector()))
        _histograms = (
            Histogram(
                "stream_generation_ttft_seconds",
                "Seconds from the start of an LLM generation to its first token.",
                buckets=TTFT_BUCKETS,
            ),
            Histogram(
                "stream_generation_tokens_per_second",
                "Tokens per second of LLM generations, after the first token.",
                buckets=TOKENS_PER_SECOND_BUCKETS,
            ),
        )
        _available = True
    return True


def observe_generation(ttft_s: float | None, tokens_per_s: float | None) -> None:
    """Record one finished LLM generation: time to first token (s) and its tokens per second.

    Pass None for a figure that does not apply (a generation that produced no token). Does
    nothing when prometheus-client is not installed; safe from any thread.
    """
    if _histograms is None and not register():
        return
    assert _histograms is not None
    ttft, rate = _histograms
    if ttft_s is not None:
        ttft.observe(ttft_s)
    if tokens_per_s is not None:
        rate.observe(tokens_per_s)


def _authorized(request: HttpRequest) -> bool:
    token = app_settings.METRICS_TOKEN
    return not token or bearer_matches(request, token)


@csrf_exempt  # it changes nothing and takes GET only: a POST gets a JSON 405, not a CSRF page
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of this process (``GET /stream/metrics/``).

    With ``STREAM_APP["METRICS_TOKEN"]`` set, scrapers must send ``Authorization: Bearer
    <token>``; without it, keep the path away from the public (deploy/nginx.conf denies it).
    """
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(
            {"error": "method_not_allowed", "message": "GET the metrics"}, status=405
        )
    if not _authorized(request):
        return JsonResponse(
            {"error": "forbidden", "message": "metrics token required"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        import prometheus_client
    except ImportError:
        return JsonResponse({"error": "metrics_unavailable", "message": UNAVAILABLE}, status=501)
    register()
    # The default registry: the project's own metrics and the process collectors (memory,
    # file descriptors, CPU) come along with ours.
    body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
    return HttpResponse(
        body,
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )

"""The health endpoint for load balancers: is this worker able to stream and publish now?

``GET /stream/health/`` answers 200 ``{"status": "ok", ...}`` when the backend answers a ping
(Redis ``PING``) within ``STREAM_APP["HEALTH_TIMEOUT"]`` seconds, and 503 when it does not or
when the worker has begun a graceful shutdown, so that the balancer sends new streams elsewhere.
A worker whose Redis is down keeps its open streams alive (keep-alives flow and the listener
reconnects by itself); the 503 only steers new clients away.
"""

from __future__ import annotations

import asyncio
import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .backends import get_backend
from .conf import app_settings
from .lifecycle import is_shutting_down
from .redact import redact
from .stats import stats

__all__ = ["health_view"]

logger = logging.getLogger("stream_app")
# The last answer, so that a failing backend is logged when it fails and when it recovers,
# not at every probe of every balancer.
_last = {"ok": True}


@csrf_exempt  # it changes nothing and takes GET only: a POST gets a JSON 405, not a CSRF page
async def health_view(request: HttpRequest) -> JsonResponse:
    """200 when the backend answers a ping, else 503; the body says which and why."""
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(
            {"error": "method_not_allowed", "message": "GET the health check"}, status=405
        )
    backend = get_backend()
    name = type(backend).__name__
    reason = None
    if is_shutting_down():
        reason = "shutting_down"
    else:
        try:
            if not await asyncio.wait_for(backend.ping(), app_settings.HEALTH_TIMEOUT):
                reason = "backend_unreachable"
        except TimeoutError:
            reason = "backend_timeout"
        except Exception as exc:  # any failure of the probe means "not healthy"
            # The message only, redacted: a traceback could quote a connection URL.
            logger.debug("health ping failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            reason = "backend_error"
    ok = reason is None
    if ok != _last["ok"]:
        _last["ok"] = ok
        if ok:
            logger.info("event=health_ok backend=%s", name)
        else:
            logger.warning("event=health_failed backend=%s reason=%s", name, reason)
    body: dict[str, object] = {"status": "ok" if ok else "unavailable", "backend": name}
    if reason is not None:
        body["reason"] = reason
    body["sessions"] = stats.open
    return JsonResponse(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})

"""Error codes of LLM streams: what the client sees when the upstream model fails.

Each adapter maps its SDK's exceptions to one of these codes. The code is stable and meant for
programs; the message is for people and never carries credentials or tracebacks (the upstream's
own text is added only when ``DEBUG`` is on). ``status`` is the HTTP status used when the
failure happens before the first byte of a direct stream.

=========================  ======  ==========================================================
code                       status  when
=========================  ======  ==========================================================
``rate_limited``           429     the provider throttled us (HTTP 429); ``retry_after`` set
                                   when the provider said how long to wait
``timeout``                504     no answer, or no next chunk, within ``LLM_TIMEOUT``
``upstream_unavailable``   502     the provider could not be reached or cut the connection
``upstream_error``         502     the provider failed (HTTP 5xx, or an error mid-stream)
``upstream_auth``          502     the provider refused our credentials (HTTP 401/403)
``bad_request``            400     the provider refused the request (HTTP 400/404/409/422),
                                   e.g. a context that is too long
``internal_error``         500     a bug on our side
``generation_lost``        500     a generation's worker stopped and nothing can finish it
                                   (it cannot be rerun, or its history is gone)
=========================  ======  ==========================================================
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from .events import Error

__all__ = ["CODES", "error_event", "internal_error", "status_error"]

logger = logging.getLogger("stream_app")

#: code -> (HTTP status, default message)
CODES: dict[str, tuple[int, str]] = {
    "rate_limited": (429, "The model provider is rate limiting requests; try again shortly."),
    "timeout": (504, "The model provider did not answer in time."),
    "upstream_unavailable": (502, "The model provider could not be reached."),
    "upstream_error": (502, "The model provider failed while answering."),
    "upstream_auth": (502, "The model provider refused this server's credentials."),
    "bad_request": (400, "The model provider refused the request."),
    "internal_error": (500, "The answer failed on the server."),
    "generation_lost": (500, "The answer was lost: the server that wrote it stopped."),
}


def error_event(
    code: str,
    detail: str | None = None,
    *,
    retry_after: float | None = None,
    upstream_status: int | None = None,
) -> Error:
    """The ``Error`` for ``code``, with the upstream's ``detail`` appended only under DEBUG."""
    status, message = CODES[code]
    if detail and (settings.DEBUG or code == "bad_request"):
        # A refused request is the caller's to fix (too long a context, unknown model): say why.
        message = f"{message} {detail[:300]}"
    return Error(code, message, status, retry_after, upstream_status)


def status_error(status: int, detail: str | None = None, retry_after: float | None = None) -> Error:
    """The ``Error`` for an upstream HTTP status."""
    if status == 429:
        code = "rate_limited"
    elif status in (401, 403):
        code = "upstream_auth"
    elif 400 <= status < 500 and status != 408:
        code = "bad_request"
    elif status == 408:
        code = "timeout"
    else:
        code = "upstream_error"
    return error_event(code, detail, retry_after=retry_after, upstream_status=status)


def internal_error(exc: BaseException) -> Error:
    """The ``Error`` for an exception no adapter recognised (logged with its traceback)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return error_event("timeout", str(exc) or None)
    logger.error("LLM stream failed", exc_info=exc)
    return error_event("internal_error", f"{type(exc).__name__}: {exc}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``, pre-divided) header value."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None

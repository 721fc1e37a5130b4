"""Per-request threads for Django's thread-sensitive code, lent from a pool instead of started.

Under ASGI, Django gives every request an asgiref ``ThreadSensitiveContext``: the request's first
thread-sensitive ``sync_to_async`` call (the ``request_started`` receivers) starts a new OS
thread, and leaving the context joins it (asgiref 3.13 starts one more thread to do the join).
On the project's machine that is ~0.3 ms of CPU per request: for short requests, such as a
reconnect storm of event streams, a large share of the whole.

``RequestThreadContext`` keeps the semantics, one thread per request, used by that request alone
for as long as it runs, and lends the thread from a small pool, as a WSGI server's worker
threads are reused: thread-local state such as database connections outlives a request exactly
as it does under WSGI, and ``request_finished`` closes connections per ``CONN_MAX_AGE`` as
usual. A thread that still has work queued when its request ends (a task the view started, in
the middle of a ``sync_to_async`` call) is not lent again: it finishes that work and exits.
Tasks that outlive the request and call thread-sensitive code afterwards get a new thread of
their own, as with Django's handler.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, ThreadSensitiveContext

__all__ = ["IDLE_THREADS", "RequestThread", "RequestThreadContext"]

_T = TypeVar("_T")
_numbers = itertools.count(1)

# Idle threads kept for the next requests; more are started when more requests run at once
# (as Django would) and exit when their request ends.
IDLE_THREADS = 64


class RequestThread(ThreadPoolExecutor):
    """One worker thread that runs the thread-sensitive code of one request at a time."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"stream_app-request-{next(_numbers)}")
        self._last: Future[Any] | None = None

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Queue ``fn`` like ThreadPoolExecutor, remembering the newest call."""
        future = super().submit(fn, *args, **kwargs)
        # One worker runs calls in order: once the newest is done, all are.
        self._last = future
        return future

    @property
    def idle(self) -> bool:
        """Nothing queued or running: the thread can serve another request."""
        return self._last is None or self._last.done()


_idle: list[RequestThread] = []


def _acquire() -> RequestThread:
    # The most recently used thread first: its stack and caches are warm.
    return _idle.pop() if _idle else RequestThread()


def _release(thread: RequestThread) -> None:
    if thread.idle and len(_idle) < IDLE_THREADS:
        _idle.append(thread)
    else:
        # Work still queued finishes first; the thread then exits.
        thread.shutdown(wait=False)


class RequestThreadContext(ThreadSensitiveContext):
    """asgiref's per-request context, with the request's thread lent from a pool.

    Entered by ``StreamASGIHandler`` around each request where Django's handler enters a plain
    ``ThreadSensitiveContext``. Only the outermost context lends a thread, as only the
    outermost ``ThreadSensitiveContext`` takes effect.
    """

    async def __aenter__(self) -> RequestThreadContext:
        await super().__aenter__()  # type: ignore[no-untyped-call]
        if self.token is not None:
            # asgiref looks the context's executor up here, and creates one if it finds none.
            # A private mapping (tests/test_internals.py names it): asgiref 3.13's public
            # ``ThreadSensitiveContext(executor=...)`` would make thread-sensitive calls of
            # tasks that outlive the request raise instead of getting a thread.
            SyncToAsync.context_to_thread_executor[self] = _acquire()
        return self

    async def __aexit__(
        self,
        exc: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Taken back before asgiref's exit, which would shut it down. Only the outermost context
        # has an entry, and only this module puts one there.
        thread = SyncToAsync.context_to_thread_executor.pop(self, None)
        await super().__aexit__(exc, value, tb)  # type: ignore[no-untyped-call]
        if isinstance(thread, RequestThread):
            _release(thread)

"""The private parts of Django and asgiref that stream_app relies on, named one by one.

No public API does what these do (README, "Dependency bounds"), so pyproject.toml bounds
django and asgiref to the minor releases tested, and each test here names one private part and
checks what stream_app assumes of it. When a new release fails one, re-check the code named in
the message before raising the bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import django
import pytest
from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.local import Local
from asgiref.sync import (
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)
from django.core.handlers import asgi as django_asgi
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpResponseBase

from stream_app import threads

# sha256 of inspect.getsource(ASGIHandler.handle) for each upstream version that
# StreamASGIHandler.handle (stream_app/asgi.py) has been compared with.
REVIEWED_HANDLE_SOURCES = {
    # Django 5.2.x and 6.0.x: the method the fork was made from.
    "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323": "Django 5.2 / 6.0",
    # Django 6.1.x rewrote it with a TaskGroup; the steps are the same (request_started, the
    # request or its error response, the view raced against the disconnect listener,
    # request_finished when the client left, response.close() otherwise, the body closed).
    "c91f27c7fcdc3fff4f1c7082e91cb30f0bfaa5781ca632a116b1d9e607fd752a": "Django 6.1",
}


def thread_name() -> str:
    return threading.current_thread().name


def test_django_asgi_handler_handle_is_a_version_the_fork_was_compared_with() -> None:
    source = inspect.getsource(ASGIHandler.handle)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest in REVIEWED_HANDLE_SOURCES, (
        f"Django {django.__version__} changed ASGIHandler.handle (sha256 {digest}). "
        "StreamASGIHandler.handle in stream_app/asgi.py is a fork of it for stream endpoints: "
        "diff the new upstream method against the one of a reviewed version, port what changed "
        "(signals sent, disconnect handling, error responses, response.close(), the body "
        "file), run tests/test_asgi.py and tests/test_handshake.py, then add the new digest "
        "to REVIEWED_HANDLE_SOURCES and raise django's bound in pyproject.toml."
    )


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("read_body", ["self", "receive"]),
        ("listen_for_disconnect", ["self", "receive"]),
        ("create_request", ["self", "scope", "body_file"]),
        ("send_response", ["self", "response", "send"]),
    ],
)
def test_django_asgi_handler_methods_the_fork_calls(name: str, parameters: list[str]) -> None:
    method = getattr(ASGIHandler, name)
    assert list(inspect.signature(method).parameters) == parameters, (
        f"ASGIHandler.{name} changed: StreamASGIHandler.handle / create_request / send_response "
        "in stream_app/asgi.py call or override it"
    )
    # The fork awaits the async ones and calls create_request in the request thread.
    assert inspect.iscoroutinefunction(method) == (name != "create_request")


def test_django_helpers_the_fork_uses() -> None:
    # get_script_prefix(scope) lives in Django's ASGI handler module, not in django.urls.
    assert list(inspect.signature(django_asgi.get_script_prefix).parameters) == ["scope"]
    # _OneHopHandler loads the middleware chain in Django's synchronous mode.
    assert "is_async" in inspect.signature(BaseHandler.load_middleware).parameters
    # _OneHopHandler.respond sets response._handler_class, as Django's handler does: close()
    # sends request_finished with it as sender.
    assert "self._handler_class" in inspect.getsource(HttpResponseBase.close)


async def test_sync_to_async_takes_a_contexts_executor_from_its_weak_mapping() -> None:
    """stream_app.threads puts the request's pooled thread into this mapping."""
    mapping = SyncToAsync.context_to_thread_executor
    assert isinstance(mapping, weakref.WeakKeyDictionary)
    lent = ThreadPoolExecutor(max_workers=1, thread_name_prefix="internals-lent")
    try:
        async with ThreadSensitiveContext() as context:
            # Only the outermost context sets a token (RequestThreadContext lends only then).
            assert context.token is not None
            async with ThreadSensitiveContext() as inner:
                assert inner.token is None
            mapping[context] = lent
            assert (await sync_to_async(thread_name)()).startswith("internals-lent")
            # Taken back before asgiref's exit would shut it down, as threads.py does.
            assert mapping.pop(context) is lent
        assert context not in mapping
        # Still usable: asgiref did not shut it down.
        assert lent.submit(thread_name).result(5).startswith("internals-lent")
    finally:
        lent.shutdown()


async def test_request_thread_context_serves_tasks_that_outlive_it() -> None:
    """Why threads.py does not pass its thread as asgiref 3.13's ``executor=``: a task that
    outlives such a context gets RuntimeError from thread-sensitive calls, where Django's own
    context (and RequestThreadContext) gives it a thread."""
    release = asyncio.Event()

    async def leftover() -> str:
        await release.wait()
        return await sync_to_async(thread_name)()

    async with threads.RequestThreadContext():
        task = asyncio.create_task(leftover())
    release.set()
    assert await task


def test_async_to_sync_keeps_its_executor_in_executors_current() -> None:
    """stream_app.asgi sets ``AsyncToSync.executors.current`` around the one-hop chain."""
    assert isinstance(AsyncToSync.executors, Local)
    caller = thread_name()

    async def inside() -> tuple[object, str]:
        current = getattr(AsyncToSync.executors, "current", None)
        return current, await sync_to_async(thread_name)()

    current, ran_on = async_to_sync(inside)()
    assert isinstance(current, CurrentThreadExecutor)
    # Thread-sensitive calls go to the executor found there: the calling thread.
    assert ran_on == caller


def test_a_finished_current_thread_executor_hands_calls_to_the_one_before_it() -> None:
    """stream_app.asgi's leftover thread is such an "old" executor (asgiref >= 3.9)."""
    assert list(inspect.signature(CurrentThreadExecutor).parameters) == ["old_executor"]
    serving: Future[CurrentThreadExecutor] = Future()
    stop: Future[None] = Future()

    def serve() -> None:
        executor = CurrentThreadExecutor(None)
        serving.set_result(executor)
        executor.run_until_future(stop)

    old_thread = threading.Thread(target=serve, name="internals-old")
    old_thread.start()
    try:
        finished: Future[CurrentThreadExecutor] = Future()

        def finish() -> None:
            executor = CurrentThreadExecutor(serving.result(5))
            done: Future[None] = Future()
            done.set_result(None)
            executor.run_until_future(done)
            finished.set_result(executor)

        threading.Thread(target=finish).start()
        assert finished.result(5).submit(thread_name).result(5) == "internals-old"
    finally:
        stop.set_result(None)
        old_thread.join(5)

"""``read_stream``: one request served in process, its response read as events, then a disconnect.

Two ways in, both through public APIs only:

- **Django's ``AsyncClient``** (and ``StreamClient``): on Django 5.2 and 6.x
  ``AsyncClient`` returns a streaming response without reading it (its handler only wraps
  ``streaming_content`` so that reaching the end closes the response). A task reads
  ``streaming_content`` as a server would; leaving the block cancels that task, which is what
  Django's ``ASGIHandler`` does when the client disconnects, so the view's iterator sees
  ``CancelledError`` where it awaits.
- **An ASGI application** (``get_asgi_application()``, ``stream_app.asgi``'s handler, your
  ``asgi.application``): called with a scope and our own ``receive``/``send``, as a server
  calls it. Leaving the block makes ``receive`` return ``http.disconnect`` (and keep returning
  it, as uvicorn does), then waits for the application to return.

Either way, leaving the block waits up to the time-out for the server side to finish and
raises ``StreamTimeout`` if it does not: a stream that ignores its client's departure is a
leak your test should see.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

from asgiref.sync import sync_to_async
from django.http import HttpResponseBase
from django.test import AsyncClient, Client

from .reader import END, Headers, StreamReader, StreamTimeout

__all__ = ["ASGIApp", "read_stream"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
#: An ASGI 3 application, ``app(scope, receive, send)`` (loosely typed: servers' and Django's
#: own annotations of the three differ).
ASGIApp = Callable[..., Awaitable[None]]

SYNC_ITERATOR = (
    "its streaming_content is a synchronous iterator: under ASGI Django reads it whole "
    "before sending a byte, so an endless stream never sends anything. Stream from an "
    "asynchronous iterator (an async generator, or stream_app's sessions)."
)


@contextlib.asynccontextmanager
async def read_stream(
    client: AsyncClient | ASGIApp,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    last_event_id: str | None = None,
    body: bytes | str = b"",
    content_type: str | None = None,
    timeout: float = 5.0,
    start_timeout: float = 30.0,
    client_address: str | None = None,
) -> AsyncIterator[StreamReader]:
    """Send one request to ``client`` (an ``AsyncClient`` or an ASGI application) and yield
    its response as a ``StreamReader``; leaving the block disconnects the client.

    ``path`` may carry a query string. ``headers`` are request headers (``Accept:
    text/event-stream`` is sent unless given); ``last_event_id`` sends ``Last-Event-ID``, as
    a reconnecting browser does. ``timeout`` (seconds) bounds each wait for an event, for a
    body, and for the server's clean-up after the disconnect; ``start_timeout`` the wait for
    the status and headers, longer because the first request of a process also imports the
    URLconf, views and middleware (measured: 3.6 s on a busy two-core machine). ``client_address``
    is the client's IP address in the ASGI scope (127.0.0.1 unless given; an ASGI application
    only: Django's ``AsyncClient`` always sends 127.0.0.1).
    """
    if isinstance(client, Client):
        raise TypeError("read_stream needs django.test.AsyncClient (or an ASGI app), not Client")
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    payload = body.encode() if isinstance(body, str) else body
    reader = StreamReader(f"{method} {path}", timeout, start_timeout)
    if isinstance(client, AsyncClient):
        if client_address is not None:
            raise TypeError("client_address needs an ASGI application: AsyncClient cannot set it")
        opened = _open_with_client(client, reader, path, method, sent, payload, content_type)
    else:
        scope = _scope(path, method, sent, payload, content_type, client_address or "127.0.0.1")
        opened = _open_asgi(client, reader, scope, payload)
    task, leave = await opened
    try:
        if not reader.is_event_stream and not reader.ended:
            await reader.read_body(timeout)
        yield reader
    except BaseException:
        # What went wrong in the block is the news; a late clean-up must not hide it.
        await _disconnect(reader, task, leave, report=False)
        raise
    await _disconnect(reader, task, leave)


async def _open_with_client(
    client: AsyncClient,
    reader: StreamReader,
    path: str,
    method: str,
    headers: dict[str, str],
    body: bytes,
    content_type: str | None,
) -> tuple[asyncio.Task[None] | None, Callable[[], None]]:
    """Send the request through ``client``; a task reads the body onto the reader's queue."""
    try:
        response: HttpResponseBase = await asyncio.wait_for(
            client.generic(
                method,
                path,
                body,
                content_type or "application/octet-stream",
                headers=headers,
            ),
            reader.start_timeout,
        )
    except TimeoutError:
        raise StreamTimeout(
            f"{reader.label}: the response (status and headers) did not come within "
            f"{reader.start_timeout:g}s"
        ) from None
    reader.status_code = response.status_code
    reader.headers = Headers(response.items())
    reader.response = response
    if not response.streaming:
        reader.queue.put_nowait(response.content)  # type: ignore[attr-defined]
        reader.queue.put_nowait(END)
        return None, _nothing
    if not response.is_async:  # type: ignore[attr-defined]
        if reader.is_event_stream and method.upper() != "HEAD":
            reader.refuse_events(SYNC_ITERATOR)
            # close() sends request_finished, whose receivers use the database: not in the loop.
            await sync_to_async(response.close)()
            return None, _nothing
        content = await sync_to_async(b"".join)(response.streaming_content)  # type: ignore[attr-defined]
        reader.queue.put_nowait(content)
        reader.queue.put_nowait(END)
        return None, _nothing

    async def pump() -> None:
        try:
            async for chunk in response.streaming_content:  # type: ignore[attr-defined]
                reader.queue.put_nowait(bytes(chunk))
        except Exception as exc:
            reader.queue.put_nowait(exc)
        else:
            reader.queue.put_nowait(END)

    task = asyncio.ensure_future(pump())
    # One turn of the loop starts the iterator (the view's stream begins, as under a server),
    # so that leaving the block at once cancels a started stream, not one never begun.
    await asyncio.sleep(0)

    def leave() -> None:
        task.cancel()

    return task, leave


def _nothing() -> None:
    """A response read whole has nobody to disconnect."""


async def _open_asgi(
    app: ASGIApp, reader: StreamReader, scope: Scope, body: bytes
) -> tuple[asyncio.Task[None], Callable[[], None]]:
    """Call ``app`` as a server would; ``send`` fills the reader's queue."""
    left = asyncio.Event()
    started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    state = {"requested": False, "complete": False}

    async def receive() -> Message:
        if not state["requested"]:
            state["requested"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not state["complete"]:
            await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set_result(message)
        elif message["type"] == "http.response.body" and not state["complete"]:
            chunk = bytes(message.get("body", b""))
            if chunk:
                reader.queue.put_nowait(chunk)
            if not message.get("more_body", False):
                state["complete"] = True
                reader.queue.put_nowait(END)
                left.set()

    def finished(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            started.cancel()
            reader.queue.put_nowait(END)
            return
        error = task.exception()
        if not started.done():
            started.set_exception(
                error or RuntimeError(f"{reader.label}: the application returned no response")
            )
        elif error is not None:
            reader.queue.put_nowait(error)
        elif not state["complete"]:
            reader.queue.put_nowait(END)

    task = asyncio.ensure_future(app(scope, receive, send))
    task.add_done_callback(finished)
    try:
        start = await asyncio.wait_for(asyncio.shield(started), reader.start_timeout)
    except TimeoutError:
        task.cancel()
        await asyncio.wait({task})
        raise StreamTimeout(
            f"{reader.label}: the response start (status and headers) did not come within "
            f"{reader.start_timeout:g}s"
        ) from None
    reader.status_code = int(start["status"])
    reader.headers = Headers(
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        for name, value in start.get("headers", ())
    )
    return task, left.set


def _scope(
    path: str,
    method: str,
    headers: dict[str, str],
    body: bytes,
    content_type: str | None,
    client_address: str,
) -> Scope:
    """The HTTP scope a server would build for ``path`` from ``client_address``."""
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    parts = urlsplit(path)
    raw = [(b"host", b"testserver")]
    raw.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": unquote(parts.path),
        "raw_path": parts.path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"),
        "root_path": "",
        "headers": raw,
        "client": (client_address, 50000),
        "server": ("testserver", 80),
    }


async def _disconnect(
    reader: StreamReader,
    task: asyncio.Task[None] | None,
    leave: Callable[[], None],
    *,
    report: bool = True,
) -> None:
    """The client leaves; wait for the server side to finish its clean-up, and if it does not,
    cancel it and (``report``) raise ``StreamTimeout``."""
    leave()
    if task is None:
        return
    # wait() neither raises what ended the task (the reader has it on its queue) nor cancels it.
    done, _ = await asyncio.wait({task}, timeout=reader.timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=reader.timeout)
        if not report:
            return
        raise StreamTimeout(
            f"{reader.label}: the application did not finish within {reader.timeout:g}s of "
            f"the client's disconnect (a stream that ignores http.disconnect leaks)"
        )

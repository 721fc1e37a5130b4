"""A loopback TCP proxy that can cut its connections half-open (no FIN, no RST), for tests.

``freeze()`` stops forwarding on every connection open at that moment, in both directions, for
good, without closing anything: what a NAT or firewall that forgot a flow, or a frozen VM, does
to a long-lived connection. The peers' sockets stay open and writable; nothing arrives any more.
Connections made while frozen are held (accepted, not forwarded) until ``thaw()``; from then on
new connections work again, while the frozen ones stay dead, as a half-open flow does.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FreezableProxy"]


class FreezableProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Event] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FreezableProxy:
        """Listen on a free loopback port (``self.port``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        """Cut every open connection half-open, and hold new ones until ``thaw``."""
        for alive in self._open:
            alive.clear()
        self._open.clear()
        self._thawed.clear()

    def thaw(self) -> None:
        """Let new (and held) connections through; frozen ones stay frozen."""
        self._thawed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.append(writer)
        await self._thawed.wait()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.append(up_writer)
        self.connections += 1
        alive = asyncio.Event()
        alive.set()
        self._open.add(alive)
        await asyncio.gather(
            self._pipe(reader, up_writer, alive),
            self._pipe(up_reader, writer, alive),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, alive: asyncio.Event
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not alive.is_set():
                # Frozen: swallow what arrives and never forward again (and never close).
                await asyncio.Future()
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        """Stop listening and close every socket."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

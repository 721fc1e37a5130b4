"""Where the Redis backend connects, and how: one place that turns settings into redis-py clients.

The target is ``REDIS_URL`` (``redis://``, ``rediss://``, ``unix://`` or
``redis+sentinel://host:port[,host:port]/service[/db]``), or ``REDIS_SENTINELS`` with
``REDIS_SENTINEL_SERVICE``; ``REDIS_OPTIONS`` adds keyword arguments of redis-py's connections
(TLS files and checks, credentials, timeouts) over what the URL's query string carries, so every
TLS option a ``rediss://`` URL or the settings hold reaches the socket (``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``...).

Every connection: TCP keepalive (probes after 5 s idle, every 1 s, 3 misses: a dead peer is
noticed in ~8 s even when nothing is being sent), a health check (a connection idle for
``HEALTH_CHECK_INTERVAL`` s answers a PING before it is used), a connect timeout and a read
timeout. A pooled connection that Redis closed (a restart, an idle timeout) fails on first use
with a ConnectionError: commands are tried once more, on a new connection. Not on a timeout: a
slow command may still run, and a publish must not be made twice. (A server that dies between
running a publish and answering it could see it made twice: rare, and a duplicate with its own
id beats a lost event.)

Pool size: a ``BlockingConnectionPool`` of ``REDIS_MAX_CONNECTIONS``: when all are busy (a
reconnect storm, a burst) a command waits for one up to the read timeout and then fails as
unreachable, so redis-py's ``MaxConnectionsError`` cannot happen and Redis never sees more than
that many connections per worker and loop. With Sentinel the pool is redis-py's
``SentinelConnectionPool`` (unbounded; it finds the primary before each new connection).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ...conf import app_settings
from ...redact import redact_url

__all__ = ["CONNECT_TIMEOUT", "HEALTH_CHECK_INTERVAL", "READ_TIMEOUT", "Target", "target"]

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 2
_KEEPALIVE = {
    name: value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
_RETRIED = (redis.ConnectionError,)
SENTINEL_SCHEME = "redis+sentinel"


def _options(tcp: bool = True) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": READ_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "decode_responses": True,
    }
    if tcp:
        # (A Unix socket has no keepalive: its peer is on this host.)
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {getattr(socket, k): v for k, v in _KEEPALIVE.items()}
    return options


@dataclass(frozen=True)
class Target:
    """The Redis the settings name: a URL, or a Sentinel service; ``options`` for every
    connection (over the defaults above)."""

    url: str | None
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    service: str | None = None
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tcp(self) -> bool:
        """False for a ``unix://`` URL."""
        return not (self.url or "").startswith("unix:")

    def describe(self) -> str:
        """Where, for messages: the URL without its password, or the Sentinel service."""
        if self.url is not None and not self.sentinels:
            return redact_url(self.url)
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"

    def async_client(
        self, retries: int = 1, setup: Callable[[Any], Awaitable[None]] | None = None
    ) -> aredis.Redis:
        """A new asyncio client with its own pool; ``retries``: tries more on a ConnectionError;
        ``setup(connection)`` runs on each new connection before its first command."""
        retry = AsyncRetry(NoBackoff(), retries, supported_errors=_RETRIED)
        extra: dict[str, Any] = {"retry": retry}
        if setup is not None:

            async def connected(connection: Any) -> None:
                await connection.on_connect()
                await setup(connection)

            extra["redis_connect_func"] = connected
        if self.sentinels:
            options = {**_options(), "db": self.db, **self.options, **extra}
            sentinel_options = options.pop("sentinel_kwargs", None)
            manager = AsyncSentinel(  # type: ignore[no-untyped-call]
                self.sentinels, sentinel_kwargs=sentinel_options, **options
            )
            client: aredis.Redis = manager.master_for(str(self.service))
            return client
        pool = aredis.BlockingConnectionPool.from_url(
            str(self.url),
            max_connections=int(app_settings.REDIS_MAX_CONNECTIONS),
            timeout=READ_TIMEOUT,
            **{**_options(self.tcp), **self.options, **extra},
        )
        return aredis.Redis.from_pool(pool)

    def sync_client(self, setup: Callable[[Any], None] | None = None) -> redis.Redis:
        """A blocking client (publishing from sync code), retried once like the asyncio one."""
        retry = Retry(NoBackoff(), 1, supported_errors=_RETRIED)
        extra: dict[str, Any] = {"retry": retry}
        if setup is not None:

            def connected(connection: Any) -> None:
                connection.on_connect()
                setup(connection)

            extra["redis_connect_func"] = connected
        if self.sentinels:
            options = {**_options(), "db": self.db, **self.options, **extra}
            sentinel_options = options.pop("sentinel_kwargs", None)
            manager = Sentinel(  # type: ignore[no-untyped-call]
                self.sentinels, sentinel_kwargs=sentinel_options, **options
            )
            sync_client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
                str(self.service)
            )
            return sync_client
        pool = redis.BlockingConnectionPool.from_url(
            str(self.url),
            max_connections=int(app_settings.REDIS_MAX_CONNECTIONS),
            timeout=READ_TIMEOUT,
            **{**_options(self.tcp), **self.options, **extra},
        )
        return redis.Redis.from_pool(pool)


def _sentinel_url(url: str) -> Target:
    """``redis+sentinel://[user:password@]host:port[,host:port]/service[/db][?option=value]``."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"{SENTINEL_SCHEME} URL: {host!r} is not host:port")
        sentinels.append((name.strip("[]"), int(port)))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError(f"{SENTINEL_SCHEME} URL needs host:port[,host:port]/service[/db]")
    db = int(path[1]) if len(path) > 1 else 0
    for name, values in parse_qs(parts.query).items():
        options[name] = values[-1]
    return Target(None, sentinels, path[0], db, options)


def target() -> Target:
    """The target the settings name now (read each time a backend is built)."""
    extra = dict(app_settings.REDIS_OPTIONS or {})
    url = str(app_settings.REDIS_URL)
    if app_settings.REDIS_SENTINELS:
        sentinels = [(str(host), int(port)) for host, port in app_settings.REDIS_SENTINELS]
        service = str(app_settings.REDIS_SENTINEL_SERVICE)
        db = int(extra.pop("db", 0))
        return Target(None, sentinels, service, db, extra)
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        found = _sentinel_url(url)
        return Target(None, found.sentinels, found.service, found.db, {**found.options, **extra})
    return Target(url, options=extra)

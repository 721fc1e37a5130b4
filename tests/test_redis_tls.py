"""The Redis backend over real TLS (``redis-server --tls-port``), with certificates made here.

Every TLS option of a ``rediss://`` URL (query string) or of ``REDIS_OPTIONS`` reaches the
publisher's and the listener's sockets; a connection that cannot be made is logged (where,
without the password, and why), not retried in silence.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import override_settings

from stream_app.backends.base import Message
from stream_app.backends.redis import RedisBackend
from stream_app.testing import EventStream
from tests.conftest import Server, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_certificates(folder: Path) -> None:
    """``ca``, ``server`` (for 127.0.0.1) and ``client`` key and certificate in ``folder``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stream_app test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): key identifiers and key usage.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca", ca_key, ca)
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        _write(folder / name, key, builder.sign(ca_key, hashes.SHA256()))


class TlsRedis:
    """A redis-server that speaks only TLS and requires a client certificate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        # fmt: off
        self.proc = subprocess.Popen(
            [
                binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(folder / "server.pem"),
                "--tls-key-file", str(folder / "server.key"),
                "--tls-ca-cert-file", str(folder / "ca.pem"),
                "--tls-auth-clients", "yes",
                "--requirepass", "s3cret-pw", "--save", "", "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # fmt: on
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server with TLS did not start")

    def url(self, **query: str) -> str:
        """A ``rediss://`` URL with the password and ``query``."""
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"rediss://:s3cret-pw@127.0.0.1:{self.port}/0" + (f"?{tail}" if tail else "")

    @property
    def files(self) -> dict[str, str]:
        """The client's TLS options, as redis-py names them."""
        return {
            "ssl_ca_certs": str(self.folder / "ca.pem"),
            "ssl_certfile": str(self.folder / "client.pem"),
            "ssl_keyfile": str(self.folder / "client.key"),
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder = tmp_path_factory.mktemp("tls")
    make_certificates(folder)
    server = TlsRedis(folder)
    yield server
    server.stop()


async def test_redis_tls_options_in_the_url_reach_publisher_and_listener(
    server_factory: Callable[..., Server], tls_redis: TlsRedis
) -> None:
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": tls_redis.url(**tls_redis.files),
        "STREAM_KEY_PREFIX": f"tls{time.monotonic_ns()}",
        "STREAM_KEEP_ALIVE": "0.3",
    }
    worker = server_factory("uvicorn", env)
    stream = await EventStream(f"{worker.url}/sse/?channel=alpha").open()
    try:
        while (await stream.next_event()).event != "ready":
            pass
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{worker.url}/stream/publish/",
                json={"channel": "alpha", "data": "tls"},
                headers=TOKEN,
            )
        assert response.status_code == 201, response.text
        event = await stream.next_event(10)
        assert (event.data, event.id) == ("tls", response.json()["id"])
        assert "s3cret-pw" not in worker.log.read_text()
    finally:
        await stream.close()


async def receive(backend: RedisBackend, channel: str, timeout: float) -> list[Message]:
    """Subscribe ``backend`` in this process and collect what its listener delivers."""
    got: list[Message] = []
    backend.deliver = got.append
    backend.subscribe(channel)
    assert await backend.ready(channel, timeout)
    return got


async def test_redis_tls_options_in_the_settings_reach_publisher_and_listener(
    tls_redis: TlsRedis,
) -> None:
    options: dict[str, Any] = {
        "REDIS_URL": tls_redis.url(),
        "REDIS_OPTIONS": {**tls_redis.files, "ssl_cert_reqs": "required"},
        "KEY_PREFIX": f"tlsopt{time.monotonic_ns()}",
    }
    with override_settings(STREAM_APP=options):
        backend = RedisBackend()
        try:
            got = await receive(backend, "beta", 5)
            sent = await backend.publish(Message("beta", "over tls"))
            sync_sent = await asyncio.to_thread(backend.publish_sync, Message("beta", "sync"))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if len(got) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert [(m.data, m.id) for m in got] == [("over tls", sent), ("sync", sync_sent)]
        finally:
            await backend.aclose()


async def test_redis_unreachable_listener_logs_where_and_why_without_the_password(
    tls_redis: TlsRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # No CA given: the server's certificate cannot be verified, every attempt fails.
    options = {"REDIS_URL": tls_redis.url(), "KEY_PREFIX": f"tlsbad{time.monotonic_ns()}"}
    with override_settings(STREAM_APP=options), caplog.at_level(logging.INFO, "stream_app"):
        backend = RedisBackend()
        try:
            backend.subscribe("gamma")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if backend.reconnects >= 4:
                    break
                await asyncio.sleep(0.05)
            assert backend.reconnects >= 4
            assert not backend.connected
        finally:
            await backend.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    where = f"rediss://:***@127.0.0.1:{tls_redis.port}/0"
    # Once at the first failure, then at most every LOG_EVERY seconds while it lasts.
    assert len(warnings) == 1, warnings
    assert f"cannot reach Redis at {where}" in warnings[0]
    assert "certificate" in warnings[0].lower()
    assert "s3cret-pw" not in caplog.text

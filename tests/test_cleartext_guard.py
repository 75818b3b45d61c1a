"""The password never leaves without verified TLS, even when a server asks for cleartext.

A tiny fake MySQL server on loopback greets the client, then switches the
authentication to ``mysql_clear_password`` and records every byte the client
sends. Plain asyncmy hands it the password; the gateway's connector does not.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from asyncmy.connection import Connection
from asyncmy.errors import OperationalError

from gateway.db.connector import Connector
from gateway.db.credentials import EnvSecret
from gateway.db.iamtokens import IamTokenProvider
from gateway.errors import DatabaseUnavailable
from gateway.settings import IamSettings, SecretSource, TargetSettings, TlsSettings

PASSWORD = "cleartext-canary-7d1f"
# LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH (no SSL)
CAPABILITIES = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000


def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _greeting() -> bytes:
    salt = b"abcdefgh" + b"ijklmnopqrst"
    return (
        b"\x0a"
        b"5.5.5-10.11.0-fake\0"
        + struct.pack("<I", 7)
        + salt[:8]
        + b"\0"
        + struct.pack("<H", CAPABILITIES & 0xFFFF)
        + b"\x2d"
        + struct.pack("<H", 2)
        + struct.pack("<H", CAPABILITIES >> 16)
        + bytes([len(salt) + 1])
        + b"\0" * 10
        + salt[8:]
        + b"\0"
        + b"mysql_native_password\0"
    )


@asynccontextmanager
async def fake_server() -> AsyncIterator[tuple[int, bytearray]]:
    """Serve the greeting, ask for cleartext, and record what the client sends."""
    received = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(_packet(0, _greeting()))
            await writer.drain()
            async with asyncio.timeout(5):
                header = await reader.readexactly(4)
                received.extend(await reader.readexactly(int.from_bytes(header[:3], "little")))
                writer.write(_packet(header[3] + 1, b"\xfemysql_clear_password\0"))
                await writer.drain()
                received.extend(await reader.read(4096))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_plain_asyncmy_sends_the_password_in_cleartext() -> None:
    """The control: asyncmy alone answers the cleartext switch without TLS (so the guard matters)."""
    async with fake_server() as (port, received):
        conn = Connection(  # type: ignore[no-untyped-call]  # asyncmy is untyped
            host="127.0.0.1", port=port, user="u", password=PASSWORD, connect_timeout=5
        )
        with pytest.raises(OperationalError, match="Lost connection"):  # the fake closes after recording
            await conn.connect()
    assert PASSWORD.encode() in received


@pytest.mark.anyio
async def test_gateway_refuses_cleartext_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TLS the connector refuses the switch: database_unavailable, the password never sent."""
    monkeypatch.setenv("GWTEST_CLEAR_PW", PASSWORD)
    async with fake_server() as (port, received):
        target = TargetSettings(
            host="127.0.0.1", port=port, database="d", secrets={"u": SecretSource(env="GWTEST_CLEAR_PW")}
        )
        connect = Connector(target, "u", EnvSecret("GWTEST_CLEAR_PW"), "SELECT 1")
        with pytest.raises(DatabaseUnavailable) as err:
            await connect()
    assert b"u\0" in received  # the handshake arrived: the fake really was asked
    assert PASSWORD.encode() not in received
    assert "cleartext" in err.value.detail
    assert PASSWORD not in err.value.detail
    assert connect.stats.results == {"cleartext_refused": 1}


@pytest.mark.anyio
async def test_iam_token_never_leaves_without_tls(tmp_path: Path) -> None:
    """An iam target insists on TLS: a server that cannot do TLS never sees the token."""
    async with fake_server() as (port, received):
        target = TargetSettings(
            host="127.0.0.1",
            port=port,
            database="d",
            auth_mode="iam",
            iam=IamSettings(region="eu-west-1", db_users=("u",)),
            tls=TlsSettings(enabled=True, verify_hostname=True),
        )

        class Fixed(IamTokenProvider):
            def _mint(self) -> str:
                return f"127.0.0.1:{port}/?Action=connect&DBUser=u&X-Amz-Signature={PASSWORD}"

        connect = Connector(target, "u", Fixed("127.0.0.1", port, "u", "eu-west-1", ttl=60), "SELECT 1")
        with pytest.raises(DatabaseUnavailable) as err:
            await connect()
    assert PASSWORD.encode() not in received
    assert PASSWORD not in err.value.detail
    assert connect.stats.results == {"connect_error": 1}

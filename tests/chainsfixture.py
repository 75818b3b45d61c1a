"""Helpers for the shared store's chains: Ed25519 keys, checkpoint settings, an old (version 1) database.

``old_schema_database`` builds what a gateway before issue 14 left behind:
version 1's tables, one global chain of ``count`` records and its head row,
written with version 1's row layout, so the migration is tested against the
real thing rather than against what version 2 would write.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pymysql
from auditfixture import audit_root_query
from conftest import DB_HOST, DB_PORT
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from gateway.audit.checkpoints import Signer
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import Dialect
from gateway.audit.reading import CHECKED, insert_sql
from gateway.audit.schema import HEAD_TABLE, LOG_TABLE, MIGRATIONS, VERSION_TABLE
from gateway.audit.store import GENESIS_HASH, link
from gateway.db.credentials import read_plain_secret
from gateway.settings import AuditDatabaseSettings, CheckpointSettings, SecretSource


def new_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half as the config takes it: base64 of the 32 raw bytes."""
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def key_file(tmp_path: Path, key: Ed25519PrivateKey, name: str = "checkpoint.pem") -> Path:
    """Write ``key`` as PKCS#8 PEM (as a mounted Secret would hold it)."""
    path = tmp_path / name
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def checkpoint_settings(tmp_path: Path, key: Ed25519PrivateKey, key_id: str = "k1", **extra: Any) -> CheckpointSettings:
    """Checkpoint settings signing with ``key`` from a file and trusting its public half."""
    return CheckpointSettings(
        key_id=key_id,
        signing_key=SecretSource(file=key_file(tmp_path, key)),
        public_keys={key_id: public_text(key)},
        **extra,
    )


def signer(key: Ed25519PrivateKey, key_id: str = "k1") -> Signer:
    """A signer for ``key`` under ``key_id``."""
    return Signer(key_id, key)


def record(i: int, writer: str = "w") -> dict[str, object]:
    """A small decision record with a time, as the audit log prepares them."""
    return {
        "event": "decision",
        "request_id": f"{writer}-{i}",
        "user": f"{writer}@example.com",
        "decision": "allow",
        "time": f"2026-12-02T10:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
    }


def account_connection(settings: AuditDatabaseSettings) -> Any:
    """A connection as the gateway's audit account to its database (autocommit)."""
    return pymysql.connect(
        host=DB_HOST,
        port=DB_PORT,
        user=settings.user,
        password=read_plain_secret(settings.secret),
        database=settings.database,
        autocommit=True,
    )


def old_schema_database(settings: AuditDatabaseSettings, count: int) -> str:
    """Create version 1's schema with one chain of ``count`` records; return the head hash."""
    database = settings.database
    audit_root_query(f"CREATE DATABASE `{database}`")
    conn = account_connection(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {VERSION_TABLE} (version INT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL, "
                "applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
            )
            version, description, statements = MIGRATIONS[0]
            for sql in statements:
                assert isinstance(sql, str)
                cur.execute(sql)
            cur.execute(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (%s, %s)", (version, description))
            # Version 1's row layout: no chain, seq the primary key. row_columns needs no connection.
            columns = MariaDBAuditStore.row_columns
            shape = object.__new__(MariaDBAuditStore)
            linked = link([record(i, "old") for i in range(1, count + 1)], 0, GENESIS_HASH, lambda r: columns(shape, r))
            v1_insert = insert_sql(Dialect(table=LOG_TABLE, param="%s", time_value=lambda t: t))
            cur.executemany(v1_insert, linked.rows)
            cur.execute(f"UPDATE {HEAD_TABLE} SET seq = %s, hash = %s WHERE id = 1", (linked.seq, linked.hash))
    finally:
        conn.close()
    return linked.hash


def fabricated_chain(database: str, chain: str, count: int) -> None:
    """Insert a well-linked chain of ``count`` made-up records and its head row, as a database writer could."""
    columns = MariaDBAuditStore.row_columns
    shape = object.__new__(MariaDBAuditStore)
    records = [record(i, chain) for i in range(1, count + 1)]
    linked = link(records, 0, GENESIS_HASH, lambda r: columns(shape, r), chain=chain)
    names = ("chain", *CHECKED, "record", "prev_hash", "hash")
    insert = f"INSERT INTO `{database}`.{LOG_TABLE} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
    for row in linked.rows:
        audit_root_query(insert, (chain, *row))
    audit_root_query(
        f"INSERT INTO `{database}`.audit_chains (chain, seq, hash) VALUES (%s, %s, %s)",
        (chain, linked.seq, linked.hash),
    )


def old_replica_append(settings: AuditDatabaseSettings, first: int, count: int) -> None:
    """Append ``count`` records as a replica still on version 1's code does (one chain, audit_head locked)."""
    conn = account_connection(settings)
    try:
        conn.begin()
        with conn.cursor() as cur:
            cur.execute(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1 FOR UPDATE")
            seq, prev = cur.fetchone()
            columns = MariaDBAuditStore.row_columns
            shape = object.__new__(MariaDBAuditStore)
            records = [record(i, "old") for i in range(first, first + count)]
            linked = link(records, int(seq), str(prev), lambda r: columns(shape, r))
            cur.executemany(insert_sql(Dialect(table=LOG_TABLE, param="%s", time_value=lambda t: t)), linked.rows)
            cur.execute(f"UPDATE {HEAD_TABLE} SET seq = %s, hash = %s WHERE id = 1", (linked.seq, linked.hash))
        conn.commit()
    finally:
        conn.close()

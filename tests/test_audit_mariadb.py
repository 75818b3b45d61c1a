"""The shared audit store in MariaDB: schema, one chain for many writers, tamper evidence, failures."""

from __future__ import annotations

import threading

import pymysql
import pytest
from auditfixture import audit_db, audit_root_query

from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import AuditFilter
from gateway.audit.verify import verify
from gateway.errors import AuditUnavailable
from gateway.settings import AuditDatabaseSettings, AuditSettings, SecretSource, TlsSettings

__all__ = ["audit_db"]


def record(i: int, **extra: object) -> dict[str, object]:
    """A small decision record."""
    return {"event": "decision", "request_id": f"r-{i}", "user": "u@example.com", "decision": "allow", **extra}


def test_schema_is_created_then_migrations_are_idempotent(audit_db: AuditDatabaseSettings) -> None:
    """The first open creates the schema and records versions 1 and 2; later opens apply nothing twice."""
    MariaDBAuditStore(audit_db).close()
    MariaDBAuditStore(audit_db).close()
    versions = audit_root_query(f"SELECT version FROM `{audit_db.database}`.audit_schema_version ORDER BY version")
    assert versions == [(1,), (2,)]
    tables = audit_root_query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
        (audit_db.database,),
    )
    assert [t for (t,) in tables] == [
        "audit_chains",
        "audit_checkpoints",
        "audit_head",
        "audit_log",
        "audit_schema_version",
    ]
    indexes = audit_root_query(
        "SELECT DISTINCT index_name FROM information_schema.statistics WHERE table_schema = %s",
        (audit_db.database,),
    )
    assert {"audit_user_time", "audit_target_decision_time", "audit_code_time", "audit_chain_seq"} <= {
        i for (i,) in indexes
    }


def test_writers_sharing_one_replica_id_make_one_gapless_chain(audit_db: AuditDatabaseSettings) -> None:
    """Four store instances given the same replica id (say, two processes on one host) take turns: one chain."""
    stores = [MariaDBAuditStore(audit_db, chain="same") for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: MariaDBAuditStore, writer: int) -> None:
        try:
            for batch in range(15):
                store.append_batch([record(writer * 1000 + batch * 10 + k) for k in range(4)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors
        assert sum(s.commits for s in stores) == 60  # group commit: one transaction per batch
        result = verify(stores[0])
        assert result.ok, result.problems
        assert result.count == result.head_seq == 240
        assert set(result.chains) == {"same"}
        head = audit_root_query(f"SELECT chain, seq, hash FROM `{audit_db.database}`.audit_chains")
        assert head == [("same", 240, result.head_hash)]
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (
            "UPDATE {t} SET record = REPLACE(record, 'r-3', 'r-X') WHERE seq = 3",
            "chain 'w1': seq 3: hash does not match",
        ),
        ("DELETE FROM {t} WHERE seq = 4", "chain 'w1': seq 4: missing"),
        ("UPDATE {t} SET seq = 100 WHERE seq = 2", "chain 'w1': seq 2: missing"),
        ("UPDATE {t} SET chain = 'w2' WHERE seq = 2", "chain 'w1': seq 2: missing"),
        (
            "DELETE FROM {t} WHERE seq >= 6",
            "chain 'w1': seq 6-7: missing, the chain ends at seq 5 but its head row names seq 7",
        ),
    ],
)
def test_verification_finds_rows_changed_in_the_database(
    audit_db: AuditDatabaseSettings, tamper: str, problem: str
) -> None:
    """Editing, deleting, moving or cutting off rows directly in MariaDB is found (the tail by the head row)."""
    store = MariaDBAuditStore(audit_db, chain="w1")
    try:
        store.append_batch([record(i) for i in range(1, 8)])
        assert verify(store).ok
        audit_root_query(tamper.format(t=f"`{audit_db.database}`.audit_log"))
        result = verify(store)
    finally:
        store.close()
    assert not result.ok
    assert any(p.startswith(problem) for p in result.problems), result.problems


def test_oversized_values_are_cut_in_columns_but_kept_whole_in_the_record(audit_db: AuditDatabaseSettings) -> None:
    """A 1,000-character claimed user cannot fail a batch: the column is cut, the hashed record is whole."""
    store = MariaDBAuditStore(audit_db)
    try:
        long_user = "x" * 1000
        store.append_batch([record(1, user=long_user), record(2)])
        (entry,) = store.query(AuditFilter(request_id="r-1")).entries
        assert entry["user"] == long_user
        assert verify(store).ok
    finally:
        store.close()


def test_a_killed_connection_fails_one_batch_then_the_store_reconnects(audit_db: AuditDatabaseSettings) -> None:
    """When the server drops the writer's connection the batch is refused (fail closed); the next one works."""
    store = MariaDBAuditStore(audit_db)
    try:
        store.append_batch([record(1)])
        (conn_id,) = store._rows("SELECT CONNECTION_ID()", ())[0]
        audit_root_query(f"KILL {int(conn_id)}")
        with pytest.raises(pymysql.Error):
            store.append_batch([record(2)])
        assert [e["seq"] for e in store.append_batch([record(3)])] == [2]
        assert verify(store).ok
    finally:
        store.close()


def test_readonly_store_reads_but_cannot_write(audit_db: AuditDatabaseSettings) -> None:
    """A readonly store (auditor reads, CLI) runs in a read-only session: a write is refused by MariaDB."""
    MariaDBAuditStore(audit_db).close()
    reader = MariaDBAuditStore(audit_db, readonly=True)
    try:
        with pytest.raises(pymysql.Error):
            reader.append_batch([record(1)])
        assert reader.last() is None
    finally:
        reader.close()


def test_unreachable_or_missing_store_is_audit_unavailable(audit_db: AuditDatabaseSettings) -> None:
    """No database or schema (readonly), a wrong account or a missing secret: AuditUnavailable, never the secret."""
    with pytest.raises(AuditUnavailable, match="cannot use audit database"):
        MariaDBAuditStore(audit_db, readonly=True)
    audit_root_query(f"CREATE DATABASE `{audit_db.database}`")
    with pytest.raises(AuditUnavailable, match="missing or too old"):
        MariaDBAuditStore(audit_db, readonly=True)
    wrong = audit_db.model_copy(update={"secret": SecretSource(env="GWTEST_AUDIT_WRONG_PASSWORD")})
    with pytest.raises(AuditUnavailable, match="env var GWTEST_AUDIT_WRONG_PASSWORD"):
        MariaDBAuditStore(wrong)
    denied = AuditDatabaseSettings(
        host=audit_db.host, port=audit_db.port, database=audit_db.database, user="nobody_gw", secret=audit_db.secret
    )
    with pytest.raises(AuditUnavailable, match="cannot connect to the audit store") as caught:
        MariaDBAuditStore(denied)
    assert "GWTEST" not in str(caught.value)


def test_tls_enabled_never_falls_back_to_plaintext(audit_db: AuditDatabaseSettings) -> None:
    """With audit TLS enabled and a server that cannot do verified TLS, the store refuses to connect."""
    tls = audit_db.model_copy(update={"tls": TlsSettings(enabled=True)})
    with pytest.raises(AuditUnavailable, match="cannot connect to the audit store"):
        MariaDBAuditStore(tls)


def test_settings_need_a_section_and_refuse_an_inline_password() -> None:
    """audit.store mariadb needs its section; a password key there is refused like a target's."""
    with pytest.raises(ValueError, match=r"needs an audit\.mariadb section"):
        AuditSettings(store="mariadb")
    base: dict[str, object] = {"host": "db", "database": "gateway_audit", "user": "gw_audit"}
    with pytest.raises(ValueError, match="passwords never sit in the config file"):
        AuditSettings.model_validate({"store": "mariadb", "mariadb": {**base, "password": "hunter2"}})
    with pytest.raises(ValueError, match="database"):
        AuditSettings.model_validate(
            {"store": "mariadb", "mariadb": {**base, "database": "x`; DROP", "secret": {"env": "X"}}}
        )
    ok = AuditSettings.model_validate(
        {"store": "mariadb", "mariadb": {**base, "secret": {"file": "/run/secrets/gw_audit"}}}
    )
    assert ok.mariadb is not None
    assert ok.mariadb.secret.file is not None

"""The shared audit store with a chain per replica (real MariaDB): no shared lock, checkpoints, verify, migration."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest
from auditfixture import audit_db, audit_root_query
from chainsfixture import (
    account_connection,
    fabricated_chain,
    new_key,
    old_replica_append,
    old_schema_database,
    public_text,
    record,
    signer,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import checkpoints
from gateway.audit.checkpoints import load_public_keys
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import AuditFilter
from gateway.audit.schema import CHECKPOINTS_TABLE, LEGACY_CHAIN, migrate
from gateway.audit.verify import verify
from gateway.audit.walk import VerifyResult
from gateway.cli.main import main
from gateway.errors import AuditUnavailable
from gateway.settings import AuditDatabaseSettings, CheckpointSettings

__all__ = ["audit_db"]

REPLICAS = ("r1", "r2", "r3")
BATCHES, PER_BATCH = 3, 4
PER_CHAIN = BATCHES * PER_BATCH


def _write_concurrently(stores: list[MariaDBAuditStore]) -> None:
    """Every store writes its batches in its own thread, all released at once."""
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(store: MariaDBAuditStore) -> None:
        try:
            start.wait(30)
            for batch in range(BATCHES):
                store.append_batch([record(batch * PER_BATCH + k, store.chain) for k in range(PER_BATCH)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The replicas' checkpoint signing key."""
    return new_key()


@pytest.fixture
def stores(audit_db: AuditDatabaseSettings) -> Iterator[list[MariaDBAuditStore]]:
    """Three replicas' stores (chains r1, r2, r3) that have each written 12 records at the same time."""
    opened = [MariaDBAuditStore(audit_db, chain=name) for name in REPLICAS]
    try:
        _write_concurrently(opened)
        yield opened
    finally:
        for store in opened:
            store.close()


def _keys(key: Ed25519PrivateKey, key_id: str = "k1") -> dict[str, Any]:
    return load_public_keys(CheckpointSettings(public_keys={key_id: public_text(key)}))


def _check(store: MariaDBAuditStore, key: Ed25519PrivateKey) -> VerifyResult:
    return verify(store, keys=_keys(key), batch=5)


def test_three_replicas_write_three_chains_that_all_verify(
    stores: list[MariaDBAuditStore], key: Ed25519PrivateKey
) -> None:
    """Three writers at once: three gapless chains of their own, their head rows, every checkpoint verified."""
    for store in stores:
        assert store.write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z") is not None
    result = _check(stores[0], key)
    assert result.ok, result.problems
    assert result.count == 3 * PER_CHAIN
    assert {name: (c.count, c.head_seq) for name, c in result.chains.items()} == dict.fromkeys(
        REPLICAS, (PER_CHAIN, PER_CHAIN)
    )
    assert result.checkpoints == 3
    assert result.notes == ["latest trusted checkpoint: checkpoint #3 (2026-12-02T11:00:00.000000Z)"]
    # A second checkpoint with no head moved is not written.
    assert stores[0].write_checkpoint(signer(key), "2026-12-02T11:00:05.000000Z") is None


def test_two_stores_on_one_chain_take_turns_without_forking_it(
    audit_db: AuditDatabaseSettings, key: Ed25519PrivateKey
) -> None:
    """A store goes on from the head of its own last commit; when another moved the head row since, it reads it.

    (Two gateways given the same replica id, or a CLI writing as that replica.)
    """
    first, second = (MariaDBAuditStore(audit_db, chain="r1") for _ in range(2))
    try:
        for n in range(3):
            for store in (first, first, second):
                (entry,) = store.append_batch([record(n, "r1")])
        assert (entry["seq"], first.commits, second.commits) == (9, 6, 3)
        result = _check(first, key)
    finally:
        first.close()
        second.close()
    assert result.ok, result.problems
    assert {name: (c.count, c.head_seq) for name, c in result.chains.items()} == {"r1": (9, 9)}


def test_a_replica_writes_while_another_replicas_chain_is_locked(
    stores: list[MariaDBAuditStore], audit_db: AuditDatabaseSettings
) -> None:
    """No cross-replica lock: with r1's head row locked by another transaction, r2 still commits at once.

    With one global head row (the store before issue 14) this write would wait for the lock and fail
    after innodb_lock_wait_timeout.
    """
    holder = account_connection(audit_db)
    try:
        with holder.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
            cur.execute("BEGIN")
            cur.execute("SELECT seq FROM audit_chains WHERE chain = 'r1' FOR UPDATE")
            (entry,) = stores[1].append_batch([record(100, "r2")])
            assert (entry["chain"], entry["seq"]) == ("r2", PER_CHAIN + 1)
            # The holder's own lock really is held: r1's row cannot be taken by a third session.
            other = account_connection(audit_db)
            try:
                with other.cursor() as cur2:
                    cur2.execute("SET SESSION innodb_lock_wait_timeout = 1")
                    with pytest.raises(pymysql.err.OperationalError, match="Lock wait timeout"):
                        cur2.execute("SELECT seq FROM audit_chains WHERE chain = 'r1' FOR UPDATE")
            finally:
                other.close()
            cur.execute("ROLLBACK")
    finally:
        holder.close()


def _tamper_tail(db: str) -> None:
    """Cut r2's last two records and rewrite its head row to match: only the checkpoint can tell."""
    audit_root_query(f"DELETE FROM `{db}`.audit_log WHERE chain = 'r2' AND seq > {PER_CHAIN - 2}")
    (digest,) = audit_root_query(f"SELECT hash FROM `{db}`.audit_log WHERE chain = 'r2' AND seq = {PER_CHAIN - 2}")[0]
    audit_root_query(f"UPDATE `{db}`.audit_chains SET seq = {PER_CHAIN - 2}, hash = %s WHERE chain = 'r2'", (digest,))


def _drop_chain(db: str) -> None:
    """Remove every record of r3 and its head row."""
    audit_root_query(f"DELETE FROM `{db}`.audit_log WHERE chain = 'r3'")
    audit_root_query(f"DELETE FROM `{db}`.audit_chains WHERE chain = 'r3'")


def _forge(db: str, key_id: str) -> None:
    """Add a checkpoint naming a made-up head for r1, signed with a key the verifier does not trust."""
    body = checkpoints.body("2026-12-02T12:00:00.000000Z", "r1", key_id, {"r1": (99, "a" * 64)})
    signature = new_key().sign(body)
    audit_root_query(
        f"INSERT INTO `{db}`.{CHECKPOINTS_TABLE} (time, writer, key_id, body, signature) VALUES (%s, %s, %s, %s, %s)",
        ("2026-12-02T12:00:00.000000Z", "r1", key_id, body, signature),
    )


TAMPERING: dict[str, tuple[Callable[[str], object], str]] = {
    "delete a record": (
        lambda db: audit_root_query(f"DELETE FROM `{db}`.audit_log WHERE chain = 'r1' AND seq = 5"),
        "chain 'r1': seq 5: missing, next entry is seq 6 (deleted or reordered)",
    ),
    "edit a record": (
        lambda db: audit_root_query(
            f"UPDATE `{db}`.audit_log SET record = REPLACE(record, 'r2@', 'rX@') WHERE chain = 'r2' AND seq = 3"
        ),
        "chain 'r2': seq 3: hash does not match the record (record edited)",
    ),
    "edit a filter column": (
        lambda db: audit_root_query(f"UPDATE `{db}`.audit_log SET user = 'x' WHERE chain = 'r3' AND seq = 2"),
        "chain 'r3': seq 2: stored column(s) user differ from the hashed record (row edited)",
    ),
    "truncate one chain's tail": (
        _tamper_tail,
        (
            f"chain 'r2': seq {PER_CHAIN - 1}-{PER_CHAIN}: missing, the chain ends at seq {PER_CHAIN - 2} "
            f"but checkpoint #1 (2026-12-02T11:00:00.000000Z) names seq {PER_CHAIN} (tail truncated)"
        ),
    ),
    "remove one replica's chain": (
        _drop_chain,
        (
            f"chain 'r3': missing, checkpoint #1 (2026-12-02T11:00:00.000000Z) names it at seq {PER_CHAIN} "
            "(a replica's chain was removed)"
        ),
    ),
    "insert a made-up chain": (
        lambda db: fabricated_chain(db, "evil", 3),
        (
            "chain 'evil': not named by any trusted checkpoint, though its first entry (2026-12-02T10:00:01.000000Z) "
            "is older than checkpoint #1 (2026-12-02T11:00:00.000000Z) (a chain inserted into the database?)"
        ),
    ),
    "forged checkpoint, trusted key id": (
        lambda db: _forge(db, "k1"),
        (
            "checkpoint #2 (2026-12-02T12:00:00.000000Z, by r1): signature does not verify with key 'k1' "
            "(forged or altered)"
        ),
    ),
    "forged checkpoint, unknown key id": (
        lambda db: _forge(db, "k9"),
        (
            "checkpoint #2 (2026-12-02T12:00:00.000000Z, by r1): signed with key id 'k9', which is not among "
            "the configured public keys (forged, or a key missing from audit.checkpoints.public_keys)"
        ),
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_with_one_chain_or_a_checkpoint_is_reported(
    stores: list[MariaDBAuditStore], key: Ed25519PrivateKey, audit_db: AuditDatabaseSettings, case: str
) -> None:
    """Each way of rewriting history in the database is found, with a message naming the chain (or checkpoint)."""
    stores[0].write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z")
    assert _check(stores[0], key).ok
    tamper, problem = TAMPERING[case]
    tamper(audit_db.database)
    result = _check(stores[1], key)
    assert not result.ok
    assert problem in result.problems, result.problems


def test_without_a_checkpoint_a_careful_truncation_is_only_a_note(
    stores: list[MariaDBAuditStore], key: Ed25519PrivateKey, audit_db: AuditDatabaseSettings
) -> None:
    """The head rows alone cannot catch a tail cut together with its head row: verify says what it lacks."""
    _tamper_tail(audit_db.database)
    result = _check(stores[0], key)
    assert result.ok  # nothing signed said r2 was longer
    assert result.checkpoints == 0
    assert "no signed checkpoints" in result.notes[0]


def test_verify_without_the_public_key_refuses_the_checkpoints(
    stores: list[MariaDBAuditStore], key: Ed25519PrivateKey
) -> None:
    """Checkpoints whose key the verifier was not given are problems, not silently skipped (fail closed)."""
    stores[0].write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z")
    result = verify(stores[0], keys={})
    assert not result.ok
    assert "which is not among the configured public keys" in result.problems[0]


def test_list_reads_all_chains_merged_by_time_with_cursor_paging(
    stores: list[MariaDBAuditStore], audit_db: AuditDatabaseSettings
) -> None:
    """Through any replica's (or a read-only) store, pages of 5 list all three chains, newest first, nothing twice."""
    reader = MariaDBAuditStore(audit_db, readonly=True)
    try:
        seen: list[tuple[str, int, str]] = []
        cursor = None
        while True:
            page = reader.query(AuditFilter(), cursor, 5)
            seen += [(e["chain"], e["seq"], e["time"]) for e in page.entries]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 3 * PER_CHAIN
        assert {(c, s) for c, s, _ in seen} == {(c, s) for c in REPLICAS for s in range(1, PER_CHAIN + 1)}
        times = [t for _, _, t in seen]
        assert times == sorted(times, reverse=True)
        only_r2 = reader.query(AuditFilter(user="r2@example.com"), None, 100).entries
        assert {e["chain"] for e in only_r2} == {"r2"}
        assert len(only_r2) == PER_CHAIN
    finally:
        reader.close()


def test_two_replicas_migrate_an_old_database_at_once(audit_db: AuditDatabaseSettings, key: Ed25519PrivateKey) -> None:
    """Version 1 data becomes the _legacy chain; two replicas migrating together apply version 2 exactly once."""
    legacy_head = old_schema_database(audit_db, 7)
    start = threading.Barrier(2)
    applied: list[list[int]] = []

    def migrate_as_replica() -> None:
        conn = account_connection(audit_db)
        try:
            start.wait(30)
            with conn.cursor() as cur:
                applied.append(migrate(cur, audit_db.database))
        finally:
            conn.close()

    threads = [threading.Thread(target=migrate_as_replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(applied) == [[], [2]]  # one replica ran it, the other found it done
    versions = audit_root_query(f"SELECT version FROM `{audit_db.database}`.audit_schema_version ORDER BY version")
    assert versions == [(1,), (2,)]
    ids = audit_root_query(f"SELECT id, seq, chain FROM `{audit_db.database}`.audit_log ORDER BY id")
    assert ids == [(i, i, LEGACY_CHAIN) for i in range(1, 8)]  # rows keep their order and become one chain

    stores = [MariaDBAuditStore(audit_db, chain=name) for name in ("r1", "r2")]
    try:
        _write_concurrently(stores)
        stores[0].write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z")
        result = _check(stores[1], key)
        assert result.ok, result.problems
        assert result.chains[LEGACY_CHAIN].head_hash == legacy_head
        assert {n: c.count for n, c in result.chains.items()} == {LEGACY_CHAIN: 7, "r1": PER_CHAIN, "r2": PER_CHAIN}
        # The legacy chain is covered by the checkpoints too: cutting its tail is found.
        audit_root_query(f"DELETE FROM `{audit_db.database}`.audit_log WHERE chain = '{LEGACY_CHAIN}' AND seq = 7")
        problems = _check(stores[1], key).problems
        assert any(p.startswith(f"chain '{LEGACY_CHAIN}': seq 7: missing") for p in problems), problems
    finally:
        for store in stores:
            store.close()


def test_a_database_migrated_by_a_newer_gateway_is_refused(audit_db: AuditDatabaseSettings) -> None:
    """A schema version this gateway does not know stops it (writer and reader), naming both versions."""
    MariaDBAuditStore(audit_db, chain="r1").close()
    audit_root_query(
        f"INSERT INTO `{audit_db.database}`.audit_schema_version (version, description) VALUES (99, 'future')"
    )
    for readonly in (False, True):
        with pytest.raises(AuditUnavailable, match="version 99, newer than this gateway's 2"):
            MariaDBAuditStore(audit_db, readonly=readonly, chain="r1")


def test_cli_verify_checks_every_chain_and_checkpoint_with_the_configured_keys(
    stores: list[MariaDBAuditStore],
    key: Ed25519PrivateKey,
    audit_db: AuditDatabaseSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gateway audit verify` reads the public keys from the config, lists each chain, and exits 1 on a forgery."""
    stores[0].write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z")
    config = tmp_path / "gateway.yaml"
    audit = {
        "store": "mariadb",
        "mariadb": {
            "host": audit_db.host,
            "port": audit_db.port,
            "database": audit_db.database,
            "user": audit_db.user,
            "secret": {"env": audit_db.secret.env},
        },
        "checkpoints": {"public_keys": {"k1": public_text(key)}},
    }
    config.write_text(
        orjson.dumps(
            {
                "dev_mode": True,
                "listen": {"host": "127.0.0.1", "port": 1},
                "targets": {"shop": {"host": "127.0.0.1", "database": "shop"}},
                "audit": audit,
            }
        ).decode(),
        encoding="utf-8",
    )
    assert main(["audit", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok: {3 * PER_CHAIN} records")
    assert [line.split(":")[0] for line in out[1:4]] == ["chain r1", "chain r2", "chain r3"]
    assert "checkpoints checked: 1" in out
    _forge(audit_db.database, "k1")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "checkpoint #2 (2026-12-02T12:00:00.000000Z, by r1): signature does not verify" in capsys.readouterr().err


def test_a_replica_still_on_version_1_keeps_writing_the_legacy_chain_during_a_rolling_upgrade(
    audit_db: AuditDatabaseSettings, key: Ed25519PrivateKey
) -> None:
    """After the migration, an old replica's writes (audit_head locked, no chain column) extend _legacy cleanly."""
    old_schema_database(audit_db, 4)
    new = MariaDBAuditStore(audit_db, chain="r1")  # migrates to version 2
    try:
        new.append_batch([record(i, "r1") for i in range(1, 4)])
        old_replica_append(audit_db, 5, 3)  # the old code, on the new schema
        new.append_batch([record(i, "r1") for i in range(4, 6)])
        new.write_checkpoint(signer(key), "2026-12-02T11:00:00.000000Z")
        result = _check(new, key)
        assert result.ok, result.problems
        assert {n: (c.count, c.head_seq) for n, c in result.chains.items()} == {LEGACY_CHAIN: (7, 7), "r1": (5, 5)}
        merged = new.query(AuditFilter(), None, 100).entries
        assert len(merged) == 12
        assert {e.get("chain", LEGACY_CHAIN) for e in merged} == {LEGACY_CHAIN, "r1"}
    finally:
        new.close()

"""The shared state store on real MariaDB: migrations, the revision, document writes, access requests, aliases."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from statefixture import lock_account, state_db, state_root_query, unlock_account

from gateway.errors import (
    ConfigError,
    Conflict,
    IdentityUnavailable,
    NotFound,
    PolicyFileError,
    PreconditionFailed,
    StateUnavailable,
)
from gateway.http.admin import applied
from gateway.policy.edit import EditResult
from gateway.policy.files import load_merged, load_policies
from gateway.policy.store import PolicyStore
from gateway.settings import SecretSource, StateDatabaseSettings, load_settings
from gateway.state.aliases import StateAliasRegistry
from gateway.state.editor import StoreEditor
from gateway.state.requests import StateAccessRequests
from gateway.state.schema import LATEST, VERSION_TABLE
from gateway.state.source import StoreSource
from gateway.state.store import StateStore

__all__ = ["state_db"]

BASE = b'version: 1\nroles:\n  admin: ["group:db-admins"]\n'
GRANT = b"""version: 1
grants:
  - name: g1
    subjects: ["user:ann@example.com"]
    target: shop
    access: read
    db_user: reader
"""


def _write(store: StateStore, name: str, content: bytes) -> int:
    write = store.begin_write()
    try:
        revision, _ = write.read()
        write.claim(revision)
        write.put(name, content)
        return write.commit()
    finally:
        write.close()


def test_two_replicas_starting_at_once_migrate_once(state_db: StateDatabaseSettings) -> None:
    """Two stores opened at the same moment on an empty database: each migration is applied by exactly one."""
    barrier = threading.Barrier(2)

    def start() -> StateStore:
        barrier.wait()
        return StateStore.open(state_db)

    with ThreadPoolExecutor(2) as pool:
        stores = list(pool.map(lambda _: start(), range(2)))
    try:
        assert sorted(s.migrated for s in stores) == [[], list(range(1, LATEST + 1))]
        rows = state_root_query(f"SELECT version FROM `{state_db.database}`.{VERSION_TABLE}")
        assert sorted(v for (v,) in rows) == list(range(1, LATEST + 1))
        assert stores[0].revision() == stores[1].revision() == 0
        again = StateStore.open(state_db)  # idempotent: a third start finds nothing to do
        assert again.migrated == []
        again.close()
    finally:
        for store in stores:
            store.close()


def test_a_newer_schema_is_refused(state_db: StateDatabaseSettings) -> None:
    """A database migrated by a newer gateway stops start-up with a clear StateUnavailable."""
    StateStore.open(state_db).close()
    state_root_query(
        f"INSERT INTO `{state_db.database}`.{VERSION_TABLE} (version, description) VALUES (%s, 'from the future')",
        (LATEST + 1,),
    )
    with pytest.raises(StateUnavailable, match=f"version {LATEST + 1}, newer than this gateway's {LATEST}"):
        StateStore.open(state_db)


def test_an_unreachable_store_is_state_unavailable(state_db: StateDatabaseSettings) -> None:
    """Nothing listening, or a wrong password: StateUnavailable (503 state_unavailable), never a raw driver error."""
    closed = state_db.model_copy(update={"port": 9, "connect_timeout": 1.0})
    with pytest.raises(StateUnavailable, match="cannot connect to the state store") as caught:
        StateStore.open(closed)
    assert (caught.value.status, caught.value.code) == (503, "state_unavailable")
    missing = state_db.model_copy(update={"secret": SecretSource(env="GWTEST_STATE_NO_SUCH_VARIABLE")})
    with pytest.raises(StateUnavailable, match="state store"):
        StateStore.open(missing)


def test_writes_bump_the_revision_and_a_stale_claim_is_refused(state_db: StateDatabaseSettings) -> None:
    """Two writes read revision 0; the first commits, the second's conditional UPDATE finds 1: 412, nothing written."""
    one, two = StateStore.open(state_db), StateStore.open(state_db)
    try:
        first, second = one.begin_write(), two.begin_write()
        assert first.read() == (0, {}) == second.read()
        assert first.claim(0) == 1
        first.put("managed.yaml", GRANT)
        outcome: dict[str, object] = {}

        def late() -> None:  # waits on the revision row's lock until the first commits
            try:
                second.claim(0)
            except PreconditionFailed as exc:
                outcome["refused"] = exc

        waiter = threading.Thread(target=late)
        waiter.start()
        assert first.commit() == 1
        waiter.join(timeout=20)
        assert isinstance(outcome.get("refused"), PreconditionFailed)
        second.close()
        first.close()
        assert one.revision() == two.revision() == 1
        assert two.documents() == (1, {"managed.yaml": GRANT})
    finally:
        one.close()
        two.close()


def test_an_uncommitted_write_leaves_nothing(state_db: StateDatabaseSettings) -> None:
    """A write whose connection goes before COMMIT (a replica killed mid-edit) leaves no trace: no half edit."""
    store = StateStore.open(state_db)
    try:
        write = store.begin_write()
        write.claim(write.read()[0])
        write.put("managed.yaml", GRANT)
        write.close()  # as a killed process: the server rolls the transaction back
        assert store.documents() == (0, {})
        assert _write(store, "managed.yaml", GRANT) == 1
    finally:
        store.close()


def test_documents_merge_with_base_files_and_name_themselves_in_problems(tmp_path: Path) -> None:
    """A document merges as a file of its name would; its problems read ``state:<name>:<line>``."""
    (tmp_path / "base.yaml").write_bytes(BASE)
    merged = load_merged(tmp_path, {"managed.yaml": GRANT}, known_targets={"shop"})
    assert [(g.name, g.source_file) for g in merged.grants] == [("g1", "managed.yaml")]
    (tmp_path / "managed.yaml").write_bytes(GRANT)
    assert load_policies(tmp_path, known_targets={"shop"}).revision == merged.revision  # same formula
    (tmp_path / "managed.yaml").unlink()
    with pytest.raises(PolicyFileError) as caught:
        load_merged(tmp_path, {"managed.yaml": GRANT.replace(b"access: read", b"access: reed")}, known_targets={"shop"})
    assert str(caught.value.problems[0]).startswith("state:managed.yaml:6: ")
    with pytest.raises(PolicyFileError, match=re.escape("has the name of the base file base.yaml")):
        load_merged(tmp_path, {"base.yaml": GRANT}, known_targets={"shop"})


def test_store_source_sees_another_replicas_write(state_db: StateDatabaseSettings, tmp_path: Path) -> None:
    """The fingerprint moves when another store instance writes; the load then has the new grant."""
    (tmp_path / "base.yaml").write_bytes(BASE)
    mine, theirs = StateStore.open(state_db), StateStore.open(state_db)
    try:
        source = StoreSource(tmp_path, mine)
        before = source.fingerprint()
        assert source.load({"shop"}).grants == ()
        _write(theirs, "managed.yaml", GRANT)
        assert source.fingerprint() != before
        assert [g.name for g in source.load({"shop"}).grants] == ["g1"]
    finally:
        mine.close()
        theirs.close()


@pytest.mark.anyio
async def test_an_edit_committed_while_the_read_link_is_down_is_reported_as_written(
    state_db: StateDatabaseSettings, tmp_path: Path
) -> None:
    """The store's read link lost (its session killed), an edit on a fresh connection commits: the reply is 201.

    The reload after the edit fails on the dead read link; the reply still says the edit was written
    (``applied_here`` false, never a 503 "nothing was written"), and the next poll puts it in force here.
    """
    (tmp_path / "base.yaml").write_bytes(BASE)
    store = StateStore.open(state_db)
    try:
        policies = PolicyStore(tmp_path, {"shop"}, source=StoreSource(tmp_path, store))
        before = policies.load().revision
        audited: list[EditResult] = []

        async def audit(result: EditResult) -> None:
            audited.append(result)

        for (session,) in state_root_query(
            "SELECT id FROM information_schema.processlist WHERE user = %s", (state_db.user,)
        ):
            state_root_query(f"KILL {int(session)}")  # only the read link is open: the edit connects anew
        editor = StoreEditor(tmp_path, store, known_targets={"shop"})
        result = await editor.add_revocation({"subject": "user:ann@example.com", "target": "*"}, before, audit)
        reply = await applied(policies, result, 201)
        body = json.loads(bytes(reply.body))
        assert (reply.status_code, body["applied_here"], body["revision"]) == (201, False, result.revision)
        assert [r.revision for r in audited] == [result.revision]
        assert policies.current.revision == before  # not yet in force here: the reload failed
        deadline = time.monotonic() + 10
        while policies.current.revision != result.revision and time.monotonic() < deadline:
            with contextlib.suppress(StateUnavailable):  # the link answers "down" for a moment after a failure
                policies.poll()
            await anyio.sleep(0.05)
        assert [r.subject for r in policies.current.revocations] == ["user:ann@example.com"]
    finally:
        store.close()


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_access_requests_are_shared_and_decided_once(state_db: StateDatabaseSettings) -> None:
    """Filed through one replica's store, listed and decided through another's; a second decision is a Conflict."""
    clock = _Clock()
    one, two = StateStore.open(state_db), StateStore.open(state_db)
    try:
        first = StateAccessRequests(one, ttl=3600, clock=clock)
        second = StateAccessRequests(two, ttl=3600, clock=clock)
        item = first.create("ann@example.com", "shop", "read", 600.0, "ticket 1", person=("https://idp", "sub-ann"))
        assert item["state"] == "pending"
        assert item["duration_s"] == 600.0
        assert [r["id"] for r in second.list(state="pending")] == [item["id"]]
        assert [r["id"] for r in second.list(person=("https://idp", "sub-ann"))] == [item["id"]]
        assert second.list(requester="bob@example.com") == []
        second.decide(item["id"], by="admin@example.com", state="approved", reason=None, grant_name=item["id"])
        with pytest.raises(Conflict, match="is approved, not pending"):
            first.decide(item["id"], by="other@example.com", state="denied", reason="no", grant_name=None)
        assert first.get(item["id"])["decided_by"] == "admin@example.com"
        first.undo(item["id"])
        assert second.get(item["id"])["state"] == "pending"
        with pytest.raises(NotFound):
            first.get("ar-nothing")
    finally:
        one.close()
        two.close()


def test_access_requests_expire_on_time_everywhere(state_db: StateDatabaseSettings) -> None:
    """Past its TTL a pending request reads expired through every replica and can no longer be decided."""
    clock = _Clock()
    one, two = StateStore.open(state_db), StateStore.open(state_db)
    try:
        first = StateAccessRequests(one, ttl=60, clock=clock)
        second = StateAccessRequests(two, ttl=60, clock=clock)
        item = first.create("ann@example.com", "shop", "read", 600.0, "ticket 2", person=("https://idp", "sub-ann"))
        clock.now += timedelta(seconds=61)
        assert first.get(item["id"])["state"] == second.get(item["id"])["state"] == "expired"
        assert [r["id"] for r in second.list(state="expired")] == [item["id"]]
        with pytest.raises(Conflict, match="is expired, not pending"):
            second.decide(item["id"], by="admin@example.com", state="approved", reason=None, grant_name=None)
    finally:
        one.close()
        two.close()


@pytest.mark.anyio
async def test_aliases_are_shared_and_fail_closed(state_db: StateDatabaseSettings) -> None:
    """A name seen on one replica is known on another; a store that cannot be used is IdentityUnavailable."""
    one, two = StateStore.open(state_db), StateStore.open(state_db)
    try:
        first, second = StateAliasRegistry(one), StateAliasRegistry(two)
        assert await first.observe("https://idp", "s1", "bob@example.com") == {"bob@example.com"}
        assert await second.observe("https://idp", "s1", "robert@example.com") == {
            "bob@example.com",
            "robert@example.com",
        }
        assert await first.names("https://idp", "s1") == {"bob@example.com", "robert@example.com"}
        assert await first.names("https://idp", "other") == frozenset()
        state_root_query(f"DROP TABLE `{state_db.database}`.aliases")
        with pytest.raises(IdentityUnavailable, match="alias registry cannot be used"):
            await first.names("https://idp", "s1")
    finally:
        one.close()
        two.close()


@pytest.mark.anyio
async def test_aliases_answer_known_names_from_the_last_read_while_the_store_is_down(
    state_db: StateDatabaseSettings,
) -> None:
    """Store down: a name already read for that person still validates; a new name or person, and names(), refuse."""
    store = StateStore.open(state_db)
    try:
        registry = StateAliasRegistry(store)
        await registry.observe("https://idp", "s1", "bob@example.com")
        await registry.observe("https://idp", "s1", "robert@example.com")
        lock_account(state_db)
        try:
            assert await registry.observe("https://idp", "s1", "bob@example.com") == {
                "bob@example.com",
                "robert@example.com",
            }
            with pytest.raises(IdentityUnavailable):
                await registry.observe("https://idp", "s1", "rob@example.com")
            with pytest.raises(IdentityUnavailable):
                await registry.observe("https://idp", "s2", "carol@example.com")
            with pytest.raises(IdentityUnavailable):
                await registry.names("https://idp", "s1")
        finally:
            unlock_account(state_db)
        # The link answers "unavailable" at once for a moment after a failure; then it is back.
        names: frozenset[str] = frozenset()
        deadline = time.monotonic() + 10
        while not names and time.monotonic() < deadline:
            try:
                names = await registry.observe("https://idp", "s1", "rob@example.com")
            except IdentityUnavailable:
                await anyio.sleep(0.05)
        assert names == {"bob@example.com", "robert@example.com", "rob@example.com"}
    finally:
        store.close()


def test_a_document_name_planted_in_the_database_is_refused(state_db: StateDatabaseSettings) -> None:
    """A name that could leave a directory (written behind the gateway's back) fails the read closed."""
    store = StateStore.open(state_db)
    try:
        state_root_query(
            f"INSERT INTO `{state_db.database}`.policy_documents (name, content, revision, updated_at) "
            "VALUES ('../escape.yaml', 'version: 1', 0, '2026-01-01T00:00:00.000000Z')"
        )
        with pytest.raises(StateUnavailable, match=re.escape("invalid name '../escape.yaml'")):
            store.documents()
        write = store.begin_write()
        try:
            with pytest.raises(StateUnavailable, match="invalid name"):
                write.read()
        finally:
            write.close()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"store": "mariadb"}, "state.store mariadb needs a state.mariadb section"),
        (
            {"store": "mariadb", "mariadb": {"host": "h", "database": "d", "user": "u", "password": "x"}},
            "passwords never sit in the config file: use state.mariadb.secret.env or .file",
        ),
        (
            {
                "store": "mariadb",
                "mariadb": {"host": "h", "database": "d", "user": "u", "secret": {"aws_secret": {"secret_id": "s"}}},
            },
            "state.mariadb.secret takes env or file",
        ),
        ({"store": "etcd"}, "Input should be 'embedded' or 'mariadb'"),
    ],
)
def test_state_settings_refuse_what_cannot_work(tmp_path: Path, state: dict[str, object], message: str) -> None:
    """No store section, a password in the file, a Secrets Manager source, an unknown store: refused at load."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, dev_mode=True, targets={"shop": {"host": "h", "database": "d"}}, state=state)
    default = load_settings(None, dev_mode=True, targets={"shop": {"host": "h", "database": "d"}})
    assert (default.state.store, default.state.mariadb, default.state.poll_interval) == ("embedded", None, 0.5)

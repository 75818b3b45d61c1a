"""``gateway db plan`` and ``gateway db check`` against the real MariaDB: exact plans, drift at every level.

A scratch server-side set-up per module: database ``A`` (tables, a view) and
``B``, accounts made by ``provision`` from a policy with allow and deny
patterns over two targets on the same server. The commands run in-process
(``gateway.cli.main.main``) as the administrator the tests use.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncmy
import pytest
from asyncmy import errors as db_errors
from conftest import DB_HOST, DB_PORT, ScratchDatabase, root_connection, root_query, run, write_policies

from gateway.cli.demo import seed
from gateway.cli.main import main
from gateway.db.provision import Account, apply_plan, drop, grant_extra, provision
from gateway.policy.files import load_policies
from gateway.policy.types import PolicySet
from gateway.settings import TargetSettings

REPO = Path(__file__).resolve().parent.parent
NOTHING = PolicySet(roles={}, grants=(), revocations=(), revision="none")


@pytest.fixture(autouse=True)
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's administrator: the tests' root account, from the environment (never an argument)."""
    monkeypatch.setenv("GATEWAY_DB_ADMIN_USER", os.environ.get("GATEWAY_TEST_DB_ROOT_USER", "root"))
    monkeypatch.setenv("GATEWAY_DB_ADMIN_PASSWORD", os.environ.get("GATEWAY_TEST_DB_ROOT_PASSWORD", ""))


def scratch_names() -> tuple[str, str]:
    """A database name and account prefix that conftest's leftover sweep recognises."""
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    return f"gwtest_{stamp}_{rand}", f"gwt{stamp[-4:]}{rand}"


@dataclass(frozen=True)
class Scratch:
    """The module's databases, accounts and the policy directory naming them."""

    a: str
    b: str
    prefix: str
    accounts: dict[str, Account]
    policies: Path

    def user(self, level: str) -> str:
        return self.accounts[level].user


POLICY = """\
version: 1
grants:
  - name: analysts
    subjects: ["group:analysts"]
    target: shop
    access: read
    db_user: {reader}
    tables: {{allow: ["{a}.*"], deny: ["{a}.payment_*", "{a}.audit_?"]}}
  - name: analysts-crm
    subjects: ["group:analysts"]
    target: crm
    access: read
    db_user: {reader}
    tables: {{allow: ["{b}.*"]}}
  - name: engineers
    subjects: ["group:engineers"]
    target: shop
    access: write
    db_user: {writer}
    tables: {{allow: ["{a}.items", "{a}.cust*"]}}
  - name: contractor-crm
    subjects: ["user:dave@example.com"]
    target: crm
    access: write
    db_user: {writer}
    expires: 2020-01-01T00:00:00Z
  - name: dba
    subjects: ["group:db-admins"]
    target: shop
    access: ddl
    db_user: {ddl}
    tables: {{allow: ["{a}.*"], deny: ["{a}.payment_*"]}}
"""


def write_config(path: Path, policies: Path, targets: dict[str, str], users: list[str]) -> Path:
    """A gateway config with the given targets (target -> database) on the test server."""
    lines = ["issuers: [{issuer: 'https://idp.invalid', audience: gateway}]", f"policies_dir: {policies}", "targets:"]
    for name, database in targets.items():
        lines += [f"  {name}:", f"    host: {DB_HOST}", f"    port: {DB_PORT}", f"    database: {database}"]
        lines += ["    secrets:", *[f"      {u}: {{env: UNUSED_{i}}}" for i, u in enumerate(users)]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    """Databases A (customers, items, payment_cards, audit_x, view v_items) and B (t1), accounts from the plan."""
    a, prefix = scratch_names()
    b = f"{a}_b"
    policies = tmp_path_factory.mktemp("dbcheck-policies")

    def policy(database: str, accounts: dict[str, Account]) -> PolicySet:
        users = {level: account.user for level, account in accounts.items()}
        (policies / "policy.yaml").write_text(POLICY.format(a=database, b=b, **users), encoding="utf-8")
        return load_policies(policies, known_targets={"shop", "crm"})

    async def setup() -> dict[str, Account]:
        conn = await root_connection()
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{b}`")
                await cur.execute(f"CREATE DATABASE `{b}`")
                await cur.execute(f"CREATE TABLE `{b}`.t1 (id INT)")
            accounts = await provision(conn, a, prefix, demo_data=True, policy=lambda _db, _acc: NOTHING)
            async with conn.cursor() as cur:
                await cur.execute(f"CREATE TABLE `{a}`.audit_x (id INT)")
                await cur.execute(f"CREATE VIEW `{a}`.v_items AS SELECT id, name FROM `{a}`.items")
            # The plan is applied once every table exists (provision planned an empty policy above).
            targets = {
                "shop": TargetSettings(host=DB_HOST, database=a),
                "crm": TargetSettings(host=DB_HOST, database=b),
            }
            await apply_plan(conn, policy(a, accounts), targets)
            return accounts
        finally:
            conn.close()

    accounts = run(setup())
    try:
        yield Scratch(a, b, prefix, accounts, policies)
    finally:

        async def teardown() -> None:
            conn = await root_connection()
            try:
                await drop(conn, a, prefix)
                async with conn.cursor() as cur:
                    await cur.execute(f"DROP DATABASE IF EXISTS `{b}`")
                    await cur.execute(f"DROP ROLE IF EXISTS `{prefix}_role`")
            finally:
                conn.close()

        run(teardown())


def _config(scratch: Scratch, tmp_path: Path) -> Path:
    users = [scratch.user(level) for level in ("reader", "writer", "ddl")]
    return write_config(tmp_path / "gateway.yaml", scratch.policies, {"shop": scratch.a, "crm": scratch.b}, users)


def _gateway(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _escaped(name: str) -> str:
    return name.replace("_", "\\_")


def test_plan_prints_the_exact_least_grants(
    scratch: Scratch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Allow/deny patterns expand against what exists: views count, denied tables and expired grants do not."""
    code, out, err = _gateway(["db", "plan", "--config", str(_config(scratch, tmp_path))], capsys)
    assert code == 0, err
    a, reader, writer, ddl = scratch.a, scratch.user("reader"), scratch.user("writer"), scratch.user("ddl")
    write = "SELECT, INSERT, UPDATE, DELETE, SHOW VIEW"
    rights = "SELECT, INSERT, UPDATE, DELETE, SHOW VIEW, ALTER, DROP, INDEX"  # CREATE and CREATE VIEW come with db.*
    lines = out.splitlines()
    assert lines[0].startswith(f"-- gateway db plan: server {DB_HOST}:{DB_PORT} (targets shop, crm), revision ")
    assert lines[1:] == [
        f"-- '{ddl}'@'%': needed by grants dba",
        f"GRANT CREATE, CREATE VIEW ON `{_escaped(a)}`.* TO '{ddl}'@'%';",
        *[f"GRANT {rights} ON `{a}`.`{t}` TO '{ddl}'@'%';" for t in ("audit_x", "customers", "items", "orders")],
        f"GRANT {rights} ON `{a}`.`v_items` TO '{ddl}'@'%';",
        f"-- '{reader}'@'%': needed by grants analysts, analysts-crm",
        f"GRANT SELECT, SHOW VIEW ON `{_escaped(scratch.b)}`.* TO '{reader}'@'%';",
        *[
            f"GRANT SELECT, SHOW VIEW ON `{a}`.`{t}` TO '{reader}'@'%';"
            for t in ("customers", "items", "orders", "v_items")
        ],
        f"-- '{writer}'@'%': needed by grants engineers",
        *[f"GRANT {write} ON `{a}`.`{t}` TO '{writer}'@'%';" for t in ("customers", "items")],
    ]


def test_check_passes_for_accounts_provisioned_from_the_plan(
    scratch: Scratch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accounts created with nothing and given the plan hold nothing beyond it, and lack nothing: exit 0."""
    code, out, err = _gateway(["db", "check", "--config", str(_config(scratch, tmp_path))], capsys)
    assert (code, out) == (0, "")
    assert err.startswith("ok: 3 accounts on 1 servers")


def test_check_finds_excess_at_every_level_and_revoke_excess_removes_it(
    scratch: Scratch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Global, database, table, column, GRANT OPTION and role drift: exit 1 naming each; the REVOKEs clean it up."""
    a, reader, writer, ddl = scratch.a, scratch.user("reader"), scratch.user("writer"), scratch.user("ddl")
    role = f"{scratch.prefix}_role"
    root_query(f"GRANT PROCESS ON *.* TO '{reader}'@'%'")
    run(_grant_extra(writer, ["SELECT"], scratch.b))  # B is only in writer's expired grant
    run(_grant_extra(reader, ["SELECT"], a, table="payment_cards"))
    root_query(f"GRANT SELECT (card_number) ON `{a}`.payment_cards TO '{writer}'@'%'")
    root_query(f"GRANT SELECT ON `{a}`.items TO '{reader}'@'%' WITH GRANT OPTION")
    root_query(f"CREATE ROLE `{role}`")
    root_query(f"GRANT `{role}` TO '{ddl}'@'%'")
    config = str(_config(scratch, tmp_path))
    code, out, err = _gateway(["db", "check", "--config", config], capsys)
    assert code == 1
    assert sorted(out.splitlines()) == sorted(
        [  # in SHOW GRANTS' order
            f"EXCESS '{ddl}'@'%': ROLE `{role}`",
            f"EXCESS '{reader}'@'%': PROCESS ON *.*",
            f"EXCESS '{reader}'@'%': SELECT ON `{a}`.`payment_cards`",
            f"EXCESS '{reader}'@'%': GRANT OPTION ON `{a}`.`items`",
            f"EXCESS '{writer}'@'%': SELECT ON `{scratch.b}`.*",
            f"EXCESS '{writer}'@'%': SELECT (`card_number`) ON `{a}`.`payment_cards`",
        ]
    )
    assert "drift: 6 privileges beyond the plan on 3 of 3 accounts" in err

    code, out, _ = _gateway(["db", "plan", "--config", config, "--revoke-excess"], capsys)
    revokes = [line for line in out.splitlines() if line.startswith("REVOKE")]
    assert sorted(revokes) == sorted(
        [
            f"REVOKE `{role}` FROM '{ddl}'@'%';",
            f"REVOKE PROCESS ON *.* FROM '{reader}'@'%';",
            f"REVOKE SELECT ON `{a}`.`payment_cards` FROM '{reader}'@'%';",
            f"REVOKE GRANT OPTION ON `{a}`.`items` FROM '{reader}'@'%';",
            f"REVOKE SELECT ON `{scratch.b}`.* FROM '{writer}'@'%';",
            f"REVOKE SELECT (`card_number`) ON `{a}`.`payment_cards` FROM '{writer}'@'%';",
        ]
    )
    for statement in revokes:
        root_query(statement.removesuffix(";"))
    code, out, _ = _gateway(["db", "check", "--config", config], capsys)
    assert (code, out) == (0, "")


async def _grant_extra(user: str, privileges: list[str], database: str, *, table: str | None = None) -> str:
    conn = await root_connection()
    try:
        return await grant_extra(conn, user, privileges, database, table=table)
    finally:
        conn.close()


def test_check_lists_missing_grants_without_failing(
    scratch: Scratch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planned right the account lacks (a table created after the plan) is MISSING, not drift: exit 0."""
    root_query(f"CREATE TABLE `{scratch.a}`.customers_new (id INT)")
    try:
        code, out, _ = _gateway(
            ["db", "check", "--config", str(_config(scratch, tmp_path)), "--target", "shop"], capsys
        )
    finally:
        root_query(f"DROP TABLE `{scratch.a}`.customers_new")
    writer, a = scratch.user("writer"), scratch.a
    assert code == 0
    assert [line for line in out.splitlines() if "customers_new" in line and writer in line] == [
        f"MISSING '{writer}'@'%': {name} ON `{a}`.`customers_new`"
        for name in ("SELECT", "INSERT", "UPDATE", "DELETE", "SHOW VIEW")
    ]
    assert not [line for line in out.splitlines() if line.startswith("EXCESS")]


def test_the_test_sessions_accounts_are_provisioned_from_the_plan(
    test_db: ScratchDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's accounts (reader/writer/ddl) hold exactly what the integration policies need."""
    write_policies(tmp_path / "policies", test_db)
    users = [a.user for a in test_db.accounts.values()]
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "policies", {"shop": test_db.name}, users)
    code, out, err = _gateway(["db", "check", "--config", str(config)], capsys)
    assert code == 0, out + err
    reader = test_db.accounts["reader"]
    assert f"GRANT SELECT, SHOW VIEW ON `{test_db.name}`.`customers` TO '{reader.user}'@'%';" in reader.grants
    assert not any("payment_cards" in g for g in reader.grants)


def test_check_refuses_to_guess_when_it_cannot_connect(
    scratch: Scratch, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong admin password: exit 2 with the cause, never the password, never an ok."""
    monkeypatch.setenv("GATEWAY_DB_ADMIN_PASSWORD", "wrong-Pa55word")
    monkeypatch.setenv("GATEWAY_DB_ADMIN_USER", scratch.user("reader"))
    code, out, err = _gateway(["db", "check", "--config", str(_config(scratch, tmp_path))], capsys)
    assert code == 2
    assert "cannot connect" in err
    assert "wrong-Pa55word" not in out + err


def test_demo_seed_creates_accounts_empty_then_applies_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway demo seed`'s set-up on a scratch name: plan-only rights, db check clean, MariaDB refuses card data."""
    database, prefix = scratch_names()
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    shop = (policies / "shop.yaml").read_text(encoding="utf-8")
    (policies / "shop.yaml").write_text(shop.replace("shop.", f"{database}.").replace("gw_", f"{prefix}_"), "utf-8")
    try:
        config, accounts = run(seed(tmp_path / "state", policies=policies, database=database, prefix=prefix))
        assert accounts["reader"].grants == tuple(
            f"GRANT SELECT, SHOW VIEW ON `{database}`.`{t}` TO '{prefix}_reader'@'%';"
            for t in ("customers", "items", "orders")
        )
        rights = "SELECT, INSERT, UPDATE, DELETE, SHOW VIEW, CREATE, ALTER, DROP, INDEX, CREATE VIEW"
        assert accounts["ddl"].grants == (f"GRANT {rights} ON `{_escaped(database)}`.* TO '{prefix}_ddl'@'%';",)
        code, out, err = _gateway(["db", "check", "--config", str(config)], capsys)
        assert (code, out) == (0, ""), err
        with pytest.raises(db_errors.OperationalError) as refused:
            run(_read_as(accounts["reader"], database, "SELECT * FROM payment_cards"))
        assert refused.value.args[0] == 1142  # MariaDB itself, not the gateway
    finally:
        run(_drop(database, prefix))


async def _read_as(account: Account, database: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncmy.connect(host=DB_HOST, port=DB_PORT, user=account.user, password=account.password, db=database)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def _drop(database: str, prefix: str) -> None:
    conn = await root_connection()
    try:
        await drop(conn, database, prefix)
    finally:
        conn.close()

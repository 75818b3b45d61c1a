"""Least privileges from the policies (``gateway.db.privileges``): the rules, without a database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.db.grants import Level, Privilege, parse_grants
from gateway.db.privileges import (
    Catalog,
    Excess,
    Needs,
    account_grants,
    escape_database,
    grant_statements,
    literal_database,
    missing,
    plan,
    revoke_statements,
)
from gateway.policy.types import Access, Grant, PolicySet
from gateway.settings import TargetSettings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DML = {"SELECT", "INSERT", "UPDATE", "DELETE"}
READ = {"SELECT", "SHOW VIEW"}  # SHOW VIEW: the gateway reads view definitions with the account (rule 28)
WRITE = DML | READ
DDL = WRITE | {"CREATE", "ALTER", "DROP", "INDEX", "CREATE VIEW"}


def grant(
    access: Access = Access.READ,
    allow: tuple[str, ...] | None = None,
    deny: Iterable[str] = (),
    *,
    name: str = "g",
    target: str = "shop",
    db_user: str = "acct",
    expires: datetime | None = None,
) -> Grant:
    """A grant with the given table rules (patterns lower case, as the loader stores them)."""
    return Grant(
        name=name,
        subjects=("group:x",),
        target=target,
        access=access,
        db_user=db_user,
        tables_allow=allow,
        tables_deny=tuple(deny),
        max_rows=None,
        statement_timeout=None,
        expires=expires,
        functions=frozenset(),
        source_file="t.yaml",
        source_line=1,
    )


def test_each_access_level_needs_its_rights_on_allowed_tables_only() -> None:
    """Read needs SELECT, write DML, ddl -> DML + CREATE/ALTER/DROP/INDEX/CREATE VIEW; denied tables get nothing."""
    for access, rights in ((Access.READ, READ), (Access.WRITE, WRITE), (Access.DDL, DDL)):
        needs = Needs([grant(access, ("shop.*",), ("shop.payment_*",))])
        assert needs.table("shop", "items") == rights
        assert needs.table("shop", "payment_cards") == frozenset()
        assert needs.table("other", "items") == frozenset()


def test_rights_of_several_grants_add_up() -> None:
    """Two grants on one account: each table gets the union of what allows it."""
    needs = Needs([grant(Access.READ, ("shop.*",)), grant(Access.WRITE, ("shop.orders",), name="w")])
    assert needs.table("shop", "orders") == WRITE
    assert needs.table("shop", "items") == READ


@pytest.mark.parametrize(
    ("allow", "deny", "db", "whole"),
    [
        (("shop.*",), (), "shop", True),
        (("shop.*",), (), "Shop", True),  # table rules are case-insensitive
        (("*",), (), "shop", True),
        (("*.*",), (), "shop", True),
        (("sh?p.*",), (), "shop", True),
        (None, (), "shop", True),
        (("shop.*",), ("other.*",), "shop", True),
        (("shop.*",), ("shop.payment_*",), "shop", False),
        (("shop.*",), ("*secret*",), "shop", False),  # a deny starting with a wildcard may match anything
        (("shop.*",), ("shop",), "shop", False),  # conservative: unsure means table by table
        (("shop.t*",), (), "shop", False),
        (("shop.*",), (), "shopx", False),
        (("*",), (), "mysql", False),  # system schemas only by a literal pattern
        (("*.*",), (), "sys", False),
        (None, (), "performance_schema", False),
        (("mysql.*",), (), "mysql", True),
        (("information_schema.*",), (), "information_schema", False),  # MariaDB refuses grants there
    ],
)
def test_a_database_is_granted_whole_only_when_every_table_of_it_is_allowed(
    allow: tuple[str, ...] | None,
    deny: tuple[str, ...],
    db: str,
    whole: bool,  # noqa: FBT001 - a parametrized expectation
) -> None:
    """db.* is planned only where the rules allow every table, now and later; otherwise table by table."""
    needs = Needs([grant(Access.READ, allow, deny)])
    assert (needs.database(db) == READ) is whole
    assert needs.database(db) <= READ


def test_a_ddl_grant_with_denies_creates_but_alters_only_allowed_tables() -> None:
    """A ddl grant on a partly denied database: CREATE and CREATE VIEW on db.*, the rest table by table."""
    needs = Needs([grant(Access.DDL, ("shop.*",), ("shop.payment_*",))])
    assert needs.database("shop") == {"CREATE", "CREATE VIEW"}
    assert needs.table("shop", "items") == DDL
    assert Needs([grant(Access.DDL, ("shop.*",), ("shop.*",))]).database("shop") == frozenset()
    assert Needs([grant(Access.DDL, ("other.t",))]).database("shop") == frozenset()
    assert Needs([grant(Access.DDL, ("*",))]).database("mysql") == frozenset()


def test_system_tables_need_a_literal_pattern_and_information_schema_never() -> None:
    """Like the gateway's own table rules: mysql.user only when named; information_schema cannot be granted."""
    assert Needs([grant(allow=("*",))]).table("mysql", "user") == frozenset()
    assert Needs([grant(allow=("mysql.user",))]).table("mysql", "user") == READ
    assert Needs([grant(allow=("information_schema.*",))]).table("information_schema", "tables") == frozenset()


def test_the_plan_grants_whole_databases_once_and_other_tables_one_by_one() -> None:
    """The exact plan over a catalog: db.* for a wholly allowed database, tables for a partly allowed one."""
    needs = Needs(
        [grant(Access.READ, ("sales.*", "hr.people", "hr.t?ams")), grant(Access.WRITE, ("sales.*",), name="w")]
    )
    catalog = Catalog(
        databases=("sales", "hr", "mysql", "information_schema"),
        tables=(("sales", "a"), ("hr", "people"), ("hr", "teams"), ("hr", "salaries"), ("mysql", "user")),
    )
    assert plan(needs, catalog) == (
        *(Privilege(Level.DATABASE, name, "sales") for name in ("SELECT", "INSERT", "UPDATE", "DELETE", "SHOW VIEW")),
        *(Privilege(Level.TABLE, name, "hr", "people") for name in ("SELECT", "SHOW VIEW")),
        *(Privilege(Level.TABLE, name, "hr", "teams") for name in ("SELECT", "SHOW VIEW")),
    )
    assert grant_statements(plan(needs, catalog), "'u'@'%'") == [
        "GRANT SELECT, INSERT, UPDATE, DELETE, SHOW VIEW ON `sales`.* TO 'u'@'%';",
        "GRANT SELECT, SHOW VIEW ON `hr`.`people` TO 'u'@'%';",
        "GRANT SELECT, SHOW VIEW ON `hr`.`teams` TO 'u'@'%';",
    ]


def test_database_names_are_escaped_so_a_grant_never_becomes_a_pattern() -> None:
    """_ and % are LIKE wildcards in database-level grants: the plan escapes them; a held wildcard is excess."""
    assert escape_database("gw_test%1") == "gw\\_test\\%1"
    assert literal_database("gw\\_test\\%1") == "gw_test%1"
    assert literal_database("gw_test") is None
    needs = Needs([grant(Access.READ, ("gw_test.*",))])
    assert needs.covers(Privilege(Level.DATABASE, "SELECT", "gw\\_test"))
    assert not needs.covers(Privilege(Level.DATABASE, "SELECT", "gw_test"))  # also matches gwXtest
    assert not needs.covers(Privilege(Level.DATABASE, "SELECT", "gw%"))


def test_excess_at_every_level() -> None:
    """Global rights but USAGE, GRANT OPTION, routines, proxies, roles and unparsed lines are never needed."""
    needs = Needs([grant(Access.READ, ("shop.*",), ("shop.payment_*",))])
    lines = parse_grants(
        [
            "GRANT USAGE ON *.* TO `u`@`%`",
            "GRANT FILE, PROCESS, SUPER, CREATE ROUTINE ON *.* TO `u`@`%`",
            "GRANT SELECT ON `other`.* TO `u`@`%`",
            "GRANT SELECT ON `shop`.`items` TO `u`@`%` WITH GRANT OPTION",
            "GRANT SELECT, UPDATE ON `shop`.`orders` TO `u`@`%`",
            "GRANT SELECT (`card_number`), SELECT (`id`) ON `shop`.`payment_cards` TO `u`@`%`",
            "GRANT SELECT (`id`) ON `shop`.`customers` TO `u`@`%`",
            "GRANT EXECUTE ON FUNCTION `shop`.`f` TO `u`@`%`",
            "GRANT PROXY ON ''@'%' TO `u`@`%`",
            "GRANT `r` TO `u`@`%`",
            "GRANT SELECT ON `hr`.* TO `r`",  # the role's own line: the role grant above counts
            "GRANT SELECT ON `hr`.* TO PUBLIC",
            "SET DEFAULT ROLE `r` FOR `u`@`%`",
            "GRANT SELECT ON `x`.`y` TO `u`@`%` WITH SOMETHING NEW",
        ]
    )
    assert [str(e) for e in needs.excess(lines)] == [
        "FILE ON *.*",
        "PROCESS ON *.*",
        "SUPER ON *.*",
        "CREATE ROUTINE ON *.*",
        "SELECT ON `other`.*",
        "GRANT OPTION ON `shop`.`items`",
        "UPDATE ON `shop`.`orders`",
        "SELECT (`card_number`) ON `shop`.`payment_cards`",
        "SELECT (`id`) ON `shop`.`payment_cards`",
        "EXECUTE ON FUNCTION `shop`.`f`",
        "PROXY ON ''@'%'",
        "ROLE `r`",
        "SELECT ON `hr`.* (granted TO PUBLIC)",
        "unparsed grant: GRANT SELECT ON `x`.`y` TO `u`@`%` WITH SOMETHING NEW",
    ]


def test_revoke_statements_take_each_kind_of_excess_away() -> None:
    """REVOKE per item; PUBLIC's rights are revoked FROM PUBLIC; an unparsed line is left to a human."""
    excess = [
        Excess(Privilege(Level.GLOBAL, "FILE")),
        Excess(Privilege(Level.COLUMN, "SELECT", "shop", "t", "c`x")),
        Excess(Privilege(Level.DATABASE, "SELECT", "hr"), public=True),
        Excess(Privilege(Level.ROLE, "r")),
        Excess(Privilege(Level.PROXY, "''@'%'")),
        Excess(Privilege(Level.PROXY, "''@'%' WITH GRANT OPTION")),
        Excess(Privilege(Level.ROUTINE, "EXECUTE", "shop", "f", routine="PROCEDURE")),
        Excess(Privilege(Level.UNPARSED, "GRANT SELECT ON x")),
    ]
    assert revoke_statements(excess, "'u'@'%'") == [
        "REVOKE FILE ON *.* FROM 'u'@'%';",
        "REVOKE SELECT (`c``x`) ON `shop`.`t` FROM 'u'@'%';",
        "REVOKE SELECT ON `hr`.* FROM PUBLIC;",
        "REVOKE `r` FROM 'u'@'%';",
        "REVOKE PROXY ON ''@'%' FROM 'u'@'%';",
        "REVOKE EXECUTE ON PROCEDURE `shop`.`f` FROM 'u'@'%';",
        "-- not revoked automatically, review by hand: GRANT SELECT ON x",
    ]


def test_missing_rights_count_what_broader_grants_already_give() -> None:
    """A planned table right is held through db.*, a matching LIKE pattern, ALL PRIVILEGES or *.*."""
    planned = (Privilege(Level.TABLE, "SELECT", "shop", "items"), Privilege(Level.TABLE, "INSERT", "shop", "items"))
    held = {
        "GRANT SELECT ON `shop`.* TO `u`@`%`": [planned[1]],
        "GRANT SELECT ON `sh%`.* TO `u`@`%`": [planned[1]],
        "GRANT ALL PRIVILEGES ON `shop`.`items` TO `u`@`%`": [],
        "GRANT SELECT, INSERT ON *.* TO `u`@`%`": [],
        "GRANT SELECT (`id`) ON `shop`.`items` TO `u`@`%`": list(planned),
        "GRANT SELECT ON `shop`.* TO `r`": list(planned),  # a role's line is not the account's
    }
    for line, expected in held.items():
        assert list(missing(planned, parse_grants([line]))) == expected, line


def test_an_account_needs_the_unexpired_grants_of_every_target_on_its_server() -> None:
    """Accounts live on servers: a grant on another target of the same host:port counts; expired ones do not."""
    targets = {
        "shop": TargetSettings(host="db1", database="shop"),
        "shop2": TargetSettings(host="DB1", database="shop2"),
        "crm": TargetSettings(host="db2", database="crm"),
    }
    grants = (
        grant(name="a", target="shop"),
        grant(name="b", target="shop2"),
        grant(name="c", target="crm"),
        grant(name="d", target="shop", db_user="other"),
        grant(name="e", target="shop", expires=NOW),
        grant(name="f", target="shop", expires=NOW + timedelta(seconds=1)),
    )
    policy = PolicySet(roles={}, grants=grants, revocations=(), revision="r")
    assert [g.name for g in account_grants(policy, targets, "shop", "acct", NOW)] == ["a", "b", "f"]


PIECES = st.sampled_from(["a", "b", "ab", "*", "?", ".", "[ab]", "[!a]", "_", "mysql", "sys"])
PATTERNS = st.lists(PIECES, min_size=1, max_size=5).map("".join)
DATABASES = st.sampled_from(["a", "b", "ab", "a_b", "a.b", "mysql", "sys", "information_schema", "A"])
TABLES = st.text(st.sampled_from("ab._*?%[]!x"), min_size=1, max_size=6)


@pytest.mark.fuzz
@settings(max_examples=budget(500))
@given(
    st.sampled_from(list(Access)),
    st.none() | st.lists(PATTERNS, min_size=1, max_size=3).map(tuple),
    st.lists(PATTERNS, max_size=3),
    DATABASES,
    st.lists(TABLES, min_size=1, max_size=8),
)
def test_a_database_wide_grant_never_covers_a_table_the_policy_refuses(
    access: Access, allow: tuple[str, ...] | None, deny: list[str], db: str, tables: list[str]
) -> None:
    """Soundness of db.*: every right planned on a whole database is one the rules give every table in it."""
    needs = Needs([grant(access, allow, deny)])
    rights = needs.database(db)
    if access is Access.DDL and rights == {"CREATE", "CREATE VIEW"}:
        return  # a partly allowed database: only creating is granted there (documented), the rest per table
    for table in tables:
        assert rights <= needs.table(db, table), (allow, deny, db, table)

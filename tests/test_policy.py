"""Policy decisions as pure functions: values in, ``Decision`` out, time a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from gateway.identity.tokens import Identity
from gateway.policy.decide import (
    Decision,
    active_revocations,
    decide,
    effective_grants,
    roles_of,
    table_allowed,
)
from gateway.policy.types import Access, Grant, PolicySet, Revocation
from gateway.sql.statements import Kind, Statement

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
SAFE = frozenset({"COUNT", "LOWER", "NOW"})
COMMANDS = {Kind.READ: "SELECT", Kind.WRITE: "UPDATE", Kind.DDL: "ALTER TABLE", Kind.OTHER: "SET"}


def who(user: str = "alice@example.com", *groups: str, aliases: tuple[str, ...] = ()) -> Identity:
    """Build an identity for ``user`` in ``groups``, whose person was also seen as ``aliases``."""
    return Identity(
        user=user,
        groups=frozenset(groups),
        subject="sub-1",
        issuer="https://idp.example.com",
        token_id=None,
        token_hash="0" * 16,
        expires_at=0.0,
        aliases=frozenset(aliases),
    )


def stmt(
    kind: Kind = Kind.READ, *tables: str, functions: tuple[str, ...] = (), command: str | None = None
) -> Statement:
    """Build an analysed statement of ``kind`` touching ``tables``."""
    return Statement(
        sql="-- test",
        kind=kind,
        command=command or COMMANDS[kind],
        tables=frozenset(tables),
        functions=frozenset(functions),
        executable_sql="-- test",
        placeholders=0,
        sql_parts=("-- test",),
    )


def grant(
    name: str,
    *subjects: str,
    access: Access = Access.READ,
    target: str = "shop",
    db_user: str = "gw_reader",
    allow: tuple[str, ...] | None = None,
    deny: tuple[str, ...] = (),
    max_rows: int | None = None,
    timeout: float | None = None,
    expires: datetime | None = None,
    functions: tuple[str, ...] = (),
) -> Grant:
    """Build a grant; defaults: read on shop as gw_reader, no table rules."""
    return Grant(
        name=name,
        subjects=subjects,
        target=target,
        access=access,
        db_user=db_user,
        tables_allow=allow,
        tables_deny=deny,
        max_rows=max_rows,
        statement_timeout=timeout,
        expires=expires,
        functions=frozenset(functions),
        source_file="test.yaml",
        source_line=1,
    )


def revoke(subject: str, target: str = "*", reason: str = "left the team", until: datetime | None = None) -> Revocation:
    """Build a revocation."""
    return Revocation(
        subject=subject,
        target=target,
        reason=reason,
        until=until,
        source_file="test.yaml",
        source_line=1,
    )


def policy(
    *grants: Grant,
    revocations: tuple[Revocation, ...] | list[Revocation] = (),
    roles: dict[str, frozenset[str]] | None = None,
) -> PolicySet:
    """Build a policy set from grants in order."""
    return PolicySet(
        roles=MappingProxyType(roles or {"admin": frozenset(), "auditor": frozenset()}),
        grants=grants,
        revocations=tuple(revocations),
        revision="r1",
    )


def check(identity, statements, pol, *, target="shop", now=NOW) -> Decision:
    """Decide with the test safe-function list, on ``shop`` at ``NOW`` by default."""
    return decide(identity, statements, target, pol, now, safe_functions=SAFE)


ANALYSTS = grant(
    "analysts-read",
    "group:analysts",
    "user:alice@example.com",
    allow=("shop.*",),
    deny=("shop.payment_*",),
    max_rows=10000,
    timeout=30.0,
)
ENGINEERS = grant(
    "engineers-write",
    "group:engineers",
    access=Access.WRITE,
    db_user="gw_writer",
    max_rows=1000,
    timeout=10.0,
)
DBA = grant("dba-ddl", "group:db-admins", access=Access.DDL, db_user="gw_ddl")
SHOP = policy(ANALYSTS, ENGINEERS, DBA)


# --- deny by default, subjects ----------------------------------------------


def test_no_grants_denies():
    """With no grant at all, every statement is forbidden (deny by default)."""
    decision = check(who(), [stmt(Kind.READ, "shop.items")], policy())
    assert decision == Decision(
        allowed=False,
        code="forbidden",
        reason="no grant allows read on shop for you",
        target="shop",
    )


def test_stranger_is_denied_and_learns_nothing_about_other_grants():
    """A caller no grant names is denied, and the reason names no grant or subject."""
    decision = check(who("eve@example.com", "visitors"), [stmt(Kind.READ, "shop.items")], SHOP)
    assert not decision.allowed
    assert decision.code == "forbidden"
    assert decision.reason == "no grant allows read on shop for you"
    assert decision.grant is None
    assert decision.db_user is None


def test_user_subject_matches():
    """A ``user:`` subject grants to that user, whatever their groups."""
    decision = check(who("alice@example.com"), [stmt(Kind.READ, "shop.items")], SHOP)
    assert decision.allowed
    assert decision.grant == "analysts-read"


def test_group_subject_matches():
    """A ``group:`` subject grants to every member of the group."""
    decision = check(who("bob@example.com", "analysts"), [stmt(Kind.READ, "shop.items")], SHOP)
    assert decision.allowed
    assert decision.grant == "analysts-read"


def test_subject_match_is_exact():
    """A user named like a group, or a group named like a user, matches nothing."""
    pol = policy(grant("g", "group:analysts"))
    assert not check(who("analysts"), [stmt()], pol).allowed
    assert not check(who("x@example.com", "user:analysts"), [stmt()], pol).allowed
    assert not check(who("x@example.com", "analyst"), [stmt()], pol).allowed


def test_grant_for_another_target_does_not_apply():
    """A grant is for its own target only."""
    decision = check(who("bob@example.com", "analysts"), [stmt()], SHOP, target="billing")
    assert decision.code == "forbidden"
    assert decision.reason == "no grant allows read on billing for you"


# --- access levels ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "kind", "allowed"),
    [
        (Access.READ, Kind.READ, True),
        (Access.READ, Kind.WRITE, False),
        (Access.READ, Kind.DDL, False),
        (Access.WRITE, Kind.READ, True),
        (Access.WRITE, Kind.WRITE, True),
        (Access.WRITE, Kind.DDL, False),
        (Access.DDL, Kind.READ, True),
        (Access.DDL, Kind.WRITE, True),
        (Access.DDL, Kind.DDL, True),
    ],
)
def test_access_levels_are_ordered(granted, kind, allowed):
    """Access levels are ordered read < write < ddl: a grant allows statements of its level and below."""
    pol = policy(grant("g", "user:u", access=granted))
    assert check(who("u"), [stmt(kind, "shop.items")], pol).allowed is allowed


def test_write_on_read_grant_names_the_missing_level():
    """A write under a read-only grant is refused as 'no grant allows write'."""
    decision = check(who("alice@example.com"), [stmt(Kind.WRITE, "shop.items")], SHOP)
    assert decision.code == "forbidden"
    assert decision.reason == "no grant allows write on shop for you"


def test_other_statements_are_rejected_even_for_ddl_grants():
    """Kind OTHER is statement_rejected, named by its command, whatever the grants."""
    decision = check(who("d", "db-admins"), [stmt(Kind.OTHER, command="SET")], SHOP)
    assert decision == Decision(
        allowed=False,
        code="statement_rejected",
        reason="SET statements are not allowed",
        target="shop",
    )


def test_other_statement_anywhere_in_a_batch_rejects_the_batch():
    """One OTHER statement in a transaction rejects the whole transaction."""
    batch = [stmt(Kind.READ, "shop.items"), stmt(Kind.OTHER, command="LOCK TABLES")]
    decision = check(who("d", "db-admins"), batch, SHOP)
    assert decision.code == "statement_rejected"
    assert decision.reason == "LOCK TABLES statements are not allowed"


def test_empty_batch_is_rejected():
    """An empty list of statements is not silently allowed."""
    decision = check(who("d", "db-admins"), [], SHOP)
    assert decision.code == "statement_rejected"
    assert decision.reason == "no statement to authorize"


# --- the deciding grant -------------------------------------------------------------


def test_allowed_decision_carries_the_grant_settings():
    """The decision names the grant, its db_user, access, max_rows and timeout."""
    decision = check(who("bob@example.com", "analysts"), [stmt(Kind.READ, "shop.orders")], SHOP)
    assert decision == Decision(
        allowed=True,
        code="allowed",
        reason="allowed by grant analysts-read",
        target="shop",
        grant="analysts-read",
        db_user="gw_reader",
        access="read",
        max_rows=10000,
        statement_timeout=30.0,
    )


def test_lowest_access_grant_is_chosen_for_a_read():
    """Holding read, write and ddl grants, a SELECT runs under the read grant."""
    caller = who("a@example.com", "analysts", "engineers", "db-admins")
    decision = check(caller, [stmt(Kind.READ, "shop.items")], SHOP)
    assert (decision.grant, decision.db_user, decision.access) == (
        "analysts-read",
        "gw_reader",
        "read",
    )


def test_lowest_sufficient_grant_is_chosen_for_a_write():
    """Holding read, write and ddl grants, an UPDATE runs under the write grant."""
    caller = who("a@example.com", "analysts", "engineers", "db-admins")
    decision = check(caller, [stmt(Kind.WRITE, "shop.items")], SHOP)
    assert (decision.grant, decision.db_user, decision.access, decision.max_rows) == (
        "engineers-write",
        "gw_writer",
        "write",
        1000,
    )
    assert decision.statement_timeout == 10.0


def test_higher_grant_used_when_the_lower_one_refuses_the_table():
    """A read the read grant refuses (payment cards) falls to a wider grant."""
    caller = who("a@example.com", "analysts", "db-admins")
    decision = check(caller, [stmt(Kind.READ, "shop.payment_cards")], SHOP)
    assert decision.allowed
    assert decision.grant == "dba-ddl"


def test_equal_access_ties_go_to_policy_order():
    """Two grants of the same level: the first in policy order decides."""
    first = grant("first", "user:u", db_user="one")
    second = grant("second", "user:u", db_user="two")
    assert check(who("u"), [stmt()], policy(first, second)).grant == "first"
    assert check(who("u"), [stmt()], policy(second, first)).grant == "second"


def test_unset_limits_stay_unset():
    """A grant without max_rows/statement_timeout yields None for both."""
    decision = check(who("d", "db-admins"), [stmt(Kind.DDL, "shop.items")], SHOP)
    assert decision.allowed
    assert decision.max_rows is None
    assert decision.statement_timeout is None


# --- tables --------------------------------------------------------------------------


def test_table_deny_beats_allow():
    """``deny: shop.payment_*`` refuses a table that ``allow: shop.*`` matches."""
    decision = check(who("alice@example.com"), [stmt(Kind.READ, "shop.payment_cards")], SHOP)
    assert decision.code == "forbidden"
    assert decision.reason == "table shop.payment_cards is not allowed by your grants"


def test_table_outside_allow_list_is_denied():
    """With an allow list, a table matching no pattern is refused."""
    decision = check(who("alice@example.com"), [stmt(Kind.READ, "billing.invoices")], SHOP)
    assert decision.reason == "table billing.invoices is not allowed by your grants"


def test_every_table_of_a_statement_is_checked():
    """One refused table among several refuses the statement (joins, subqueries)."""
    statement = stmt(Kind.READ, "shop.items", "shop.orders", "shop.payment_cards")
    decision = check(who("alice@example.com"), [statement], SHOP)
    assert decision.reason == "table shop.payment_cards is not allowed by your grants"


@pytest.mark.parametrize(
    ("pattern", "table", "allowed"),
    [
        ("shop.*", "shop.items", True),
        ("shop.*", "shopping.items", False),
        ("shop.item?", "shop.items", True),
        ("shop.item?", "shop.item", False),
        ("shop.[io]*", "shop.orders", True),
        ("shop.[io]*", "shop.customers", False),
        ("*.items", "other.items", True),
        ("SHOP.Items", "shop.items", True),
        ("shop.items", "shop.items_archive", False),
    ],
)
def test_table_patterns_are_fnmatch_and_case_insensitive(pattern, table, allowed):
    """Allow patterns are fnmatch patterns on db.table, matched case-insensitively."""
    assert table_allowed(grant("g", "user:u", allow=(pattern,)), table) is allowed


def test_no_allow_list_allows_every_non_system_table():
    """Without ``allow`` any db.table is allowed, except those the deny list names."""
    g = grant("g", "user:u", deny=("shop.payment_*",))
    assert table_allowed(g, "shop.items")
    assert table_allowed(g, "other.things")
    assert not table_allowed(g, "shop.payment_cards")


@pytest.mark.parametrize("schema", ["mysql", "information_schema", "performance_schema", "sys"])
def test_system_schemas_are_denied_without_an_allow_list(schema):
    """A grant without ``allow`` never reaches the system schemas."""
    assert not table_allowed(grant("g", "user:u", access=Access.DDL), f"{schema}.user")


@pytest.mark.parametrize("pattern", ["*", "*.*", "*.user", "m*.*", "mysq?.user", "[m]ysql.*"])
def test_wildcards_do_not_grant_system_schemas(pattern):
    """Only an allow pattern naming the schema literally opens it; wildcards do not."""
    g = grant("g", "user:u", allow=(pattern,))
    assert not table_allowed(g, "mysql.user")
    assert table_allowed(g, "shop.user") is (pattern in {"*", "*.*", "*.user"})


def test_system_schema_allowed_when_named_explicitly():
    """``allow: [information_schema.*]`` opens that schema, and only that one."""
    g = grant("g", "user:u", allow=("information_schema.*", "shop.*"))
    assert table_allowed(g, "information_schema.tables")
    assert table_allowed(g, "INFORMATION_SCHEMA.TABLES")
    assert not table_allowed(g, "mysql.user")
    assert not table_allowed(g, "performance_schema.threads")


def test_deny_beats_an_explicit_system_schema_allow():
    """A deny pattern still refuses a system table that an allow pattern names."""
    g = grant("g", "user:u", allow=("mysql.*",), deny=("mysql.user",))
    assert table_allowed(g, "mysql.db")
    assert not table_allowed(g, "mysql.user")


def test_unqualified_table_name_is_refused():
    """A table name without its schema fails closed, even under a bare ``*``."""
    assert not table_allowed(grant("g", "user:u", allow=("*",)), "items")
    assert not table_allowed(grant("g", "user:u"), "items")
    assert not table_allowed(grant("g", "user:u"), ".items")


def test_statement_without_tables_needs_only_the_access_level():
    """``SELECT 1`` touches no table, so any read grant allows it."""
    assert check(who("alice@example.com"), [stmt(Kind.READ)], SHOP).allowed


# --- functions -----------------------------------------------------------------------


def test_safe_functions_are_allowed():
    """Functions in the safe list need no policy entry."""
    statement = stmt(Kind.READ, "shop.items", functions=("COUNT", "LOWER"))
    assert check(who("alice@example.com"), [statement], SHOP).allowed


def test_unsafe_function_is_denied_by_name():
    """A function outside the safe list is refused, and the reason names it."""
    statement = stmt(Kind.READ, "shop.items", functions=("COUNT", "SLEEP"))
    decision = check(who("alice@example.com"), [statement], SHOP)
    assert decision.code == "forbidden"
    assert decision.reason == "function SLEEP is not allowed"


def test_grant_functions_extend_the_safe_list():
    """A grant's ``functions`` allows those functions, for that grant only."""
    with_fn = grant("stats", "user:u", functions=("SHOP.MARGIN",))
    statement = stmt(Kind.READ, "shop.items", functions=("SHOP.MARGIN",))
    assert check(who("u"), [statement], policy(with_fn)).grant == "stats"
    assert not check(who("alice@example.com"), [statement], policy(ANALYSTS, with_fn)).allowed


def test_function_names_compare_case_insensitively():
    """Function names are compared upper case, whatever case the caller used."""
    statement = stmt(Kind.READ, "shop.items", functions=("count",))
    assert check(who("alice@example.com"), [statement], SHOP).allowed


def test_functions_in_writes_are_checked_too():
    """An unsafe function is refused in a write as well as in a read."""
    statement = stmt(Kind.WRITE, "shop.items", functions=("BENCHMARK",))
    decision = check(who("e", "engineers"), [statement], SHOP)
    assert decision.reason == "function BENCHMARK is not allowed"


# --- expiry --------------------------------------------------------------------------


def test_grant_is_valid_until_just_before_expiry():
    """One microsecond before ``expires`` the grant still allows."""
    pol = policy(grant("temp", "user:u", expires=NOW))
    assert check(who("u"), [stmt()], pol, now=NOW - timedelta(microseconds=1)).allowed


def test_grant_is_dead_exactly_at_expiry():
    """At the ``expires`` instant the grant no longer allows, and says so."""
    pol = policy(grant("temp", "user:u", expires=NOW))
    decision = check(who("u"), [stmt()], pol, now=NOW)
    assert decision.code == "forbidden"
    assert decision.reason == "your grant temp expired at 2026-06-01T12:00:00Z"
    assert not check(who("u"), [stmt()], pol, now=NOW + timedelta(seconds=1)).allowed


def test_expiry_compares_instants_across_timezones():
    """An expiry written in another zone is the same instant in UTC."""
    plus_two = datetime(2026, 6, 1, 16, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    pol = policy(grant("temp", "user:u", expires=plus_two))
    assert check(who("u"), [stmt()], pol, now=NOW + timedelta(hours=1, minutes=59)).allowed
    assert not check(who("u"), [stmt()], pol, now=NOW + timedelta(hours=2)).allowed


def test_expired_grant_falls_back_to_a_live_one():
    """When one grant expired, another live grant still decides."""
    old = grant("old-write", "user:u", access=Access.WRITE, expires=NOW - timedelta(days=1))
    live = grant("live-write", "user:u", access=Access.WRITE)
    assert check(who("u"), [stmt(Kind.WRITE)], policy(old, live)).grant == "live-write"


def test_expiry_reason_beats_the_generic_access_reason():
    """With a live read grant and an expired write grant, a write hears of the expiry."""
    old = grant("old-write", "user:u", access=Access.WRITE, expires=NOW - timedelta(days=1))
    read = grant("read", "user:u")
    decision = check(who("u"), [stmt(Kind.WRITE, "shop.items")], policy(read, old))
    assert decision.reason == "your grant old-write expired at 2026-05-31T12:00:00Z"


# --- revocations -------------------------------------------------------------------


def test_revocation_beats_every_grant():
    """A matching revocation refuses with code revoked, even for a DDL grant holder."""
    pol = policy(ANALYSTS, ENGINEERS, DBA, revocations=[revoke("user:bob@example.com")])
    decision = check(who("bob@example.com", "db-admins"), [stmt(Kind.READ, "shop.items")], pol)
    assert decision == Decision(
        allowed=False,
        code="revoked",
        reason="access to shop is revoked: left the team",
        target="shop",
    )


def test_revocation_is_checked_before_statement_kind():
    """A revoked caller hears 'revoked' even when sending a forbidden statement."""
    pol = policy(DBA, revocations=[revoke("user:bob@example.com")])
    decision = check(who("bob@example.com", "db-admins"), [stmt(Kind.OTHER)], pol)
    assert decision.code == "revoked"


def test_revocation_of_a_group_applies_to_its_members():
    """A ``group:`` revocation refuses every member of the group."""
    pol = policy(ANALYSTS, revocations=[revoke("group:analysts", "shop", "audit pending")])
    decision = check(who("bob@example.com", "analysts"), [stmt()], pol)
    assert decision.code == "revoked"
    assert decision.reason == "access to shop is revoked: audit pending"


def test_revocation_for_another_target_does_not_apply():
    """A revocation for target ``billing`` leaves ``shop`` access alone."""
    pol = policy(ANALYSTS, revocations=[revoke("user:alice@example.com", "billing")])
    assert check(who("alice@example.com"), [stmt()], pol).allowed
    assert check(who("alice@example.com"), [stmt()], pol, target="billing").code == "revoked"


def test_star_revocation_applies_to_every_target():
    """``target: "*"`` revokes on every target, including ones no grant names."""
    pol = policy(ANALYSTS, revocations=[revoke("user:alice@example.com", "*")])
    assert check(who("alice@example.com"), [stmt()], pol).code == "revoked"
    assert check(who("alice@example.com"), [stmt()], pol, target="other").code == "revoked"


def test_revocation_until_ends_it():
    """A revocation applies before ``until`` and not from that instant on."""
    pol = policy(ANALYSTS, revocations=[revoke("user:alice@example.com", until=NOW)])
    before = check(who("alice@example.com"), [stmt()], pol, now=NOW - timedelta(seconds=1))
    assert before.code == "revoked"
    assert before.reason == "access to shop is revoked: left the team (until 2026-06-01T12:00:00Z)"
    assert check(who("alice@example.com"), [stmt()], pol, now=NOW).allowed


def test_revocation_without_reason():
    """A revocation with an empty reason still refuses, with the bare reason."""
    pol = policy(ANALYSTS, revocations=[revoke("user:alice@example.com", reason="")])
    assert check(who("alice@example.com"), [stmt()], pol).reason == "access to shop is revoked"


def test_identity_holds_canonical_names_only():
    """An identity cannot be built with a name in another spelling: exact comparison with policies is sound."""
    for user, groups in (("Bob@Example.com", ()), (" bob@example.com", ()), ("bob", ("Admins",))):
        with pytest.raises(ValueError, match="canonical"):
            who(user, *groups)


def test_revocation_of_an_alias_applies_to_the_person():
    """A revocation of any name the person was seen with applies, whatever name the token carries now."""
    pol = policy(grant("g", "user:robert@example.com"), revocations=[revoke("user:bob@example.com")])
    robert = who("robert@example.com", aliases={"bob@example.com"})
    assert check(robert, [stmt()], pol).code == "revoked"
    assert effective_grants(robert, pol, NOW) == []
    assert [r.subject for r in active_revocations(robert, pol, NOW)] == ["user:bob@example.com"]
    assert check(who("robert@example.com"), [stmt()], pol).allowed


def test_grants_and_roles_match_the_current_name_only():
    """A grant or role naming an old alias does not follow the person: only the name the token carries grants."""
    pol = policy(grant("g", "user:bob@example.com"), roles={"admin": frozenset({"user:bob@example.com"})})
    robert = who("robert@example.com", aliases={"bob@example.com"})
    assert check(robert, [stmt()], pol).code == "forbidden"
    assert roles_of(robert, pol) == frozenset()
    assert check(who("bob@example.com", aliases={"robert@example.com"}), [stmt()], pol).allowed


# --- batches -------------------------------------------------------------------------


def test_batch_allowed_by_one_grant():
    """A read and a write in one transaction run under one write grant."""
    batch = [stmt(Kind.READ, "shop.items"), stmt(Kind.WRITE, "shop.orders")]
    decision = check(who("e", "engineers"), batch, SHOP)
    assert decision.allowed
    assert decision.grant == "engineers-write"


def test_batch_needing_two_grants_is_denied():
    """Statements each allowed by a different grant, but none by one, are refused."""
    reader = grant("reader", "user:u", allow=("shop.customers",))
    writer = grant("writer", "user:u", access=Access.WRITE, allow=("shop.orders",))
    batch = [stmt(Kind.READ, "shop.customers"), stmt(Kind.WRITE, "shop.orders")]
    decision = check(who("u"), batch, policy(reader, writer))
    assert decision.code == "forbidden"
    assert decision.reason == "no single grant allows every statement of the transaction"
    assert check(who("u"), batch[:1], policy(reader, writer)).grant == "reader"
    assert check(who("u"), batch[1:], policy(reader, writer)).grant == "writer"


def test_batch_with_a_refused_table_names_it():
    """A transaction with a table no grant allows names that table."""
    batch = [stmt(Kind.READ, "shop.items"), stmt(Kind.READ, "shop.payment_cards")]
    decision = check(who("alice@example.com"), batch, SHOP)
    assert decision.reason == "table shop.payment_cards is not allowed by your grants"


def test_batch_access_level_is_the_highest_statement():
    """A batch with one DDL statement needs a DDL grant."""
    batch = [stmt(Kind.READ, "shop.items"), stmt(Kind.DDL, "shop.items")]
    decision = check(who("e", "engineers"), batch, SHOP)
    assert decision.reason == "no grant allows ddl on shop for you"
    assert check(who("d", "db-admins"), batch, SHOP).grant == "dba-ddl"


# --- roles, effective grants ---------------------------------------------------------


def test_roles_of_matches_users_and_groups():
    """Roles come from the caller's user and group subjects."""
    roles = {
        "admin": frozenset({"group:db-admins"}),
        "auditor": frozenset({"group:security", "user:carol@example.com"}),
    }
    pol = policy(roles=roles)
    assert roles_of(who("carol@example.com"), pol) == {"auditor"}
    assert roles_of(who("x", "db-admins", "security"), pol) == {"admin", "auditor"}
    assert roles_of(who("x", "analysts"), pol) == frozenset()


def test_effective_grants_lists_live_grants_of_the_caller():
    """Effective grants: the caller's, unexpired, in policy order; others' are hidden."""
    old = grant("old", "user:u", expires=NOW)
    live = grant("live", "group:g", target="billing")
    other = grant("other", "user:someone-else")
    pol = policy(old, live, ANALYSTS, other)
    assert [g.name for g in effective_grants(who("u", "g"), pol, NOW)] == ["live"]
    before = NOW - timedelta(seconds=1)
    assert [g.name for g in effective_grants(who("u", "g"), pol, before)] == ["old", "live"]


def test_effective_grants_leave_out_revoked_targets():
    """Grants on a target revoked for the caller are not usable, so not listed."""
    shop = grant("s", "user:u")
    billing = grant("b", "user:u", target="billing")
    pol = policy(shop, billing, revocations=[revoke("user:u", "billing")])
    assert [g.name for g in effective_grants(who("u"), pol, NOW)] == ["s"]
    everything = policy(shop, billing, revocations=[revoke("user:u", "*")])
    assert effective_grants(who("u"), everything, NOW) == []
    assert [r.target for r in active_revocations(who("u"), everything, NOW)] == ["*"]

"""The decision memo answers exactly what ``decide`` answers; a hit skips the grant scan.

Asked at, just before and just after every policy instant, with clocks that go back, policies switching,
aliases, groups and batches.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.identity.tokens import Identity
from gateway.policy import memo as memo_module
from gateway.policy.decide import Decision, decide
from gateway.policy.memo import DecisionMemo, instants
from gateway.policy.types import Access, Grant, PolicySet, Revocation
from gateway.revocation.inflight import InFlight, still_allowed
from gateway.sql.statements import SAFE_FUNCTIONS, Kind, Statement

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MOMENTS = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30)]
# Times to ask at: each policy instant exactly, a microsecond either side, and between them.
TIMES = sorted({m + timedelta(microseconds=d) for m in MOMENTS for d in (-1, 0, 1)} | {T0 + timedelta(seconds=99)})
USERS = ("alice", "bob")
GROUPS = ("analysts", "admins")
SUBJECTS = [f"user:{u}" for u in USERS] + [f"group:{g}" for g in GROUPS]
TARGETS = ("shop", "hr")
TABLES = ("shop.items", "shop.payment_cards", "hr.people", "mysql.user")
KINDS = {Kind.READ: "SELECT", Kind.WRITE: "INSERT", Kind.DDL: "CREATE TABLE", Kind.OTHER: "SET"}

grants = st.builds(
    lambda n, subjects, target, access, allow, deny, expires, functions: Grant(
        name=f"g{n}",
        subjects=tuple(subjects),
        target=target,
        access=access,
        db_user="gw_reader",
        tables_allow=allow,
        tables_deny=deny,
        max_rows=None,
        statement_timeout=None,
        expires=expires,
        functions=functions,
        source_file="p.yaml",
        source_line=n,
    ),
    st.integers(1, 99),
    st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=2, unique=True),
    st.sampled_from(TARGETS),
    st.sampled_from(list(Access)),
    st.none() | st.sampled_from([("shop.*",), ("hr.*", "mysql.user"), ("*",)]),
    st.sampled_from([(), ("shop.payment_*",)]),
    st.none() | st.sampled_from(MOMENTS),
    st.sampled_from([frozenset(), frozenset({"SLEEP"})]),
)
revocations = st.builds(
    lambda subject, target, until: Revocation(subject, target, "", until, "p.yaml", 1),
    st.sampled_from(SUBJECTS),
    st.sampled_from([*TARGETS, "*"]),
    st.none() | st.sampled_from(MOMENTS),
)
policies = st.builds(
    lambda g, r: PolicySet(roles={}, grants=tuple(g), revocations=tuple(r), revision="r"),
    st.lists(grants, max_size=4),
    st.lists(revocations, max_size=2),
)


def _identity(user: str, groups: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> Identity:
    return Identity(user, frozenset(groups), f"sub-{user}", "https://idp", None, "h", 0.0, frozenset(aliases))


def _statement(kind: Kind, tables: tuple[str, ...], functions: tuple[str, ...] = ()) -> Statement:
    return Statement("-", kind, KINDS[kind], frozenset(tables), frozenset(functions), "-", 0, ("-",))


# A small universe of near neighbours: two questions that differ in one input only (an alias, a group, a
# function, a table, a kind, the target) meet often in one memo, so an input left out of the key is found.
IDENTITIES = [
    _identity("alice"),
    _identity("alice", aliases=("bob",)),
    _identity("alice", groups=("analysts",)),
    _identity("alice", groups=("admins",)),
    _identity("bob"),
    _identity("bob", aliases=("alice",)),  # the same revocation subjects as alice's with alias bob
]
BATCHES = [
    [],
    [_statement(Kind.READ, ("shop.items",))],
    [_statement(Kind.READ, ("shop.items",), ("SLEEP",))],
    [_statement(Kind.READ, ("shop.payment_cards",))],
    [_statement(Kind.WRITE, ("shop.items",))],
    [_statement(Kind.OTHER, ())],
    [Statement("-", Kind.OTHER, "LOCK TABLES", frozenset(), frozenset(), "-", 0, ("-",))],  # another command
    [_statement(Kind.READ, ("shop.items",)), _statement(Kind.DDL, ("shop.items",))],
    [_statement(Kind.READ, ("hr.people", "mysql.user"))],
]


QUESTIONS = [
    (identity, batch, target, now)
    for identity in IDENTITIES
    for batch in BATCHES
    for target in TARGETS
    for now in TIMES
]


@settings(max_examples=budget(50))
@given(st.lists(policies, min_size=1, max_size=2), st.randoms(use_true_random=False), st.sampled_from([8, 4096]))
def test_the_memo_answers_what_decide_answers(policy_sets: list[PolicySet], order: random.Random, bound: int) -> None:
    """Every near-neighbour question, in a random order (so times go back too), under policies that switch.

    Each of the ~1,000 questions is asked of a memo that may already hold the answer to one that differs in
    one input only: an input left out of the key gives a wrong answer somewhere in the run.
    """
    memo = DecisionMemo(max_entries=bound)
    inflight = InFlight()  # its admission check (still_allowed) is remembered the same way
    asked = [(question, order.randrange(len(policy_sets))) for question in QUESTIONS * 2]
    order.shuffle(asked)
    for (identity, batch, target, now), which in asked:
        policy = policy_sets[which]
        fresh = decide(identity, batch, target, policy, now, safe_functions=SAFE_FUNCTIONS)
        assert memo.decide(identity, batch, target, policy, now, safe_functions=SAFE_FUNCTIONS) == fresh
        assert inflight.allows(identity, target, policy, now) == still_allowed(identity, target, policy, now)
    assert memo.hits > 0


def _policy(expires: datetime | None = None, until: datetime | None = None) -> PolicySet:
    grant = Grant(
        "g1", ("user:alice",), "shop", Access.READ, "gw_reader", None, (), None, None, expires, frozenset(), "p", 1
    )
    revoked = (Revocation("user:alice", "shop", "", until, "p", 2),) if until else ()
    return PolicySet(roles={}, grants=(grant,), revocations=revoked, revision="r")


def _alice() -> Identity:
    return _identity("alice")


READ = _statement(Kind.READ, ("shop.items",))


def test_a_grant_expiring_or_a_revocation_ending_changes_the_remembered_answer() -> None:
    """The answer before a policy instant is not reused at or after it, nor after the clock goes back."""
    memo = DecisionMemo()
    expiring = _policy(expires=MOMENTS[1])

    def ask(now: datetime, policy: PolicySet = expiring) -> bool:
        return memo.decide(_alice(), [READ], "shop", policy, now, safe_functions=SAFE_FUNCTIONS).allowed

    assert ask(MOMENTS[1] - timedelta(microseconds=1))
    assert not ask(MOMENTS[1])  # expires: dead at the instant itself
    assert ask(MOMENTS[0])  # the clock went back
    ending = _policy(until=MOMENTS[2])
    assert not ask(MOMENTS[2] - timedelta(microseconds=1), ending)
    assert ask(MOMENTS[2], ending)  # the revocation's end
    assert instants(ending) == (MOMENTS[2],)


def test_a_repeated_question_is_answered_without_deciding_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hit does not call decide; a new policy object (a reload) forgets every answer."""
    calls: list[datetime] = []

    def counting(
        identity: Identity, batch: list[Statement], target: str, policy: PolicySet, now: datetime, **kw: frozenset[str]
    ) -> Decision:
        calls.append(now)
        return decide(identity, batch, target, policy, now, **kw)

    monkeypatch.setattr(memo_module, "decide", counting)
    memo = DecisionMemo()
    policy = _policy()
    for _ in range(3):
        assert memo.decide(_alice(), [READ], "shop", policy, T0, safe_functions=SAFE_FUNCTIONS).allowed
    assert (len(calls), memo.hits, memo.misses) == (1, 2, 1)
    reloaded = _policy()  # equal, but another object: a reload
    assert memo.decide(_alice(), [READ], "shop", reloaded, T0, safe_functions=SAFE_FUNCTIONS).allowed
    assert len(calls) == 2  # decided again after the reload

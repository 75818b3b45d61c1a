"""The attack corpus (``tests/attacks/*.yaml``) replayed against a real gateway, then MariaDB's own log read.

The corpus database's accounts can do far more than their grants need (a
second schema, the denied ``payment_cards``, writes and DDL for the reader:
``corpusfixture``), so the gateway alone stands in the way. The module
fixture replays every case once, in file order, with the general log on; then:

* each case must have been refused with its layer's status and problem code,
  its detail or audited reason, and a deny record (never ``database_error``,
  never a 500, never a 2xx);
* the general log must show that nothing the corpus sent ran, and that the
  corpus accounts touched nothing outside the policy (the second schema,
  ``payment_*``, the system schemas) and the reader wrote nothing, while
  allowed control requests (sentinels) do show, so the log check has teeth.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpusfixture import CORPUS_COUNTS, GeneralLog, LogRow, corpus_gateway, corpus_schemas, direct_reads
from corpusreplay import CLASSES, LAYERS, Case, Outcome, Replayer, attach_records, load_corpus, refusal_problems
from oidcfixture import OidcProvider

from gateway.db.catalog import _QUERY as VIEW_CATALOGUE_QUERY
from gateway.db.pools import INIT_COMMAND

CASES = load_corpus()
MIN_CASES = 300
MIN_PER_CLASS = 10
# Allowed requests run before the corpus: each must show in the general log (as which account).
SENTINELS = [
    ("reader", "SELECT COUNT(*) FROM items"),
    ("reader", "SELECT id, name FROM v_items WHERE id = 1"),
    ("writer", "UPDATE customers SET name = name WHERE id = 1"),
]
_GW_COMMENT = re.compile(r"^/\* gw request_id=([0-9a-f]{32}) user=[A-Za-z0-9@._+-]* \*/ ")
# The gateway's own wrapper around a request's statement (limits), taken off before the statement is judged.
_WRAPPER = re.compile(r"^SET STATEMENT [a-z_]+=[0-9.]+(?:, [a-z_]+=[0-9.]+)* FOR ")
_READ = re.compile(r"^\(*\s*(SELECT|WITH|TABLE|VALUES)\b", re.IGNORECASE)
# What the gateway runs on its own (no request comment): session set-up, transaction ends, the drift check,
# the view catalogue (information_schema.VIEWS, by name: SECURITY rule 28).
_INTERNAL = [
    re.compile(re.escape(INIT_COMMAND) + "$"),
    re.compile(
        r"^(COMMIT|ROLLBACK|SHOW GRANTS|START TRANSACTION( READ ONLY)?|SET AUTOCOMMIT ?= ?[01])$", re.IGNORECASE
    ),
    re.compile(re.escape(VIEW_CATALOGUE_QUERY.split("{", 1)[0]) + r"\('[^']*', '[^']*'\)(, \('[^']*', '[^']*'\))*\)$"),
]


@dataclass
class CorpusRun:
    """Everything the replay found: an outcome per case, the general log rows, the sentinels' ids."""

    names: dict[str, str]
    prefix: str
    accounts: dict[str, str]  # level -> MariaDB account name
    outcomes: dict[str, Outcome]
    sentinels: dict[str, str]  # request id -> level
    rows: list[LogRow]
    direct: dict[str, str]  # what the reader's account itself may read, straight from MariaDB


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[CorpusRun]:
    """Replay the whole corpus once (serially) with MariaDB's general log on; the tests judge the result."""
    tmp = tmp_path_factory.mktemp("corpus")
    with corpus_schemas(tmp) as schemas, corpus_gateway(tmp, idp, schemas) as gateway:
        names = {"db": schemas.db.name, "second": schemas.second}
        replayer = Replayer(gateway.url, idp, names)
        direct = direct_reads(schemas)  # before the log starts: these are not the gateway's
        general_log = GeneralLog()
        try:
            general_log.start()
            for user in ("reader", "writer", "admin", "mallory", "nobody"):  # the alias registry knows everyone
                replayer.http.get("/v1/me", headers={"Authorization": f"Bearer {replayer.token(user)}"})
            sentinels = {}
            for level, sql in SENTINELS:
                reply = replayer.http.post(
                    "/v1/query",
                    json={"target": "shop", "sql": sql},
                    headers={"Authorization": f"Bearer {replayer.token(level)}"},
                )
                assert reply.status_code == 200, reply.text
                sentinels[reply.json()["request_id"]] = level
            outcomes = {case.id: _replay(replayer, case) for case in CASES}
            gateway.audit_settled()
            rows = general_log.rows(schemas.db.prefix)
        finally:
            general_log.stop()
            replayer.close()
        attach_records(outcomes, gateway.settings.audit.path)
        accounts = {level: account.user for level, account in schemas.db.accounts.items()}
        yield CorpusRun(names, schemas.db.prefix, accounts, outcomes, sentinels, rows, direct)


def _replay(replayer: Replayer, case: Case) -> Outcome:
    try:
        return replayer.send(case)
    except Exception as exc:  # noqa: BLE001 - a broken case is reported by its own test, not the whole module
        return Outcome(0, f"the replay failed: {exc!r}", None)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_attack_is_refused_by_the_expected_layer(corpus: CorpusRun, case: Case) -> None:
    """The case was refused with its layer's status and code, its detail or reason, and a deny record."""
    outcome = corpus.outcomes[case.id]
    problems = refusal_problems(case, outcome, corpus.names)
    assert problems == [], f"{case.id} ({case.description}): {outcome.status} {outcome.body!r}"


def _outside_policy(text: str, names: dict[str, str]) -> str | None:
    """What in a statement lies outside the corpus policy, or None."""
    plain = text.replace("`", "").lower()
    checks = {
        "the second schema": re.escape(names["second"].lower()),
        "a payment_* table": r"\bpayment_",
        "a system schema": r"\b(mysql|information_schema|performance_schema|sys)\s*\.",
    }
    for what, pattern in checks.items():
        if re.search(pattern, plain):
            return what
    return None


def _judge(row: LogRow, corpus: CorpusRun) -> str | None:
    """What is wrong with one general log row of the corpus accounts, or None."""
    if row.command in {"Connect", "Quit", "Ping"}:
        return None
    request = _GW_COMMENT.match(row.argument)
    wrong: str | None
    if row.command != "Query":
        wrong = f"an unexpected {row.command} command"
    elif request is None:  # the gateway's own statements: only the known shapes
        known = any(shape.match(row.argument) for shape in _INTERNAL)
        wrong = None if known else "a statement that no request and no gateway routine explains"
    elif request.group(1) not in corpus.sentinels:  # every corpus case was refused: none of them may run
        wrong = f"request {request.group(1)} ran, and it is not one of the allowed sentinels"
    else:
        statement = _WRAPPER.sub("", row.argument[request.end() :], count=1)
        outside = _outside_policy(statement, corpus.names)
        reader = row.user_host.startswith(f"{corpus.accounts['reader']}[")
        wrong = f"it touched {outside}" if outside else None
        if wrong is None and reader and not _READ.match(statement):
            wrong = "the reader ran something that is not a read"
    return wrong


def test_general_log_shows_nothing_outside_the_policy(corpus: CorpusRun) -> None:
    """MariaDB's own log of the corpus accounts' sessions: nothing a corpus case sent ran, nothing else either.

    Every row is a connection event, the gateway's own statement (session
    set-up, a transaction end, the view catalogue read by name from
    information_schema.VIEWS), or a sentinel: an allowed request run before
    the corpus, which touched no second schema, payment_* or system table, and
    which for the reader is a read. Each sentinel is in the log under its
    account, so the log did capture what the gateway ran.
    """
    wrong = [
        f"{row.user_host.split('[')[0]}: {why}: {row.argument[:300]!r}"
        for row in corpus.rows
        if (why := _judge(row, corpus))
    ]
    assert wrong == [], "\n".join(wrong)
    ran = {m.group(1): row.user_host for row in corpus.rows if (m := _GW_COMMENT.match(row.argument))}
    for request_id, level in corpus.sentinels.items():
        assert request_id in ran, f"sentinel {request_id} ({level}) is not in the general log"
        assert ran[request_id].startswith(f"{corpus.accounts[level]}["), ran[request_id]


def test_only_the_gateway_stands_in_the_way(corpus: CorpusRun) -> None:
    """The premise holds: MariaDB itself lets the reader's account read everything the corpus reads.

    Straight to MariaDB, the account reads the second schema, payment_cards, the
    views over them and the stored functions; so every refusal of those in the
    corpus is the gateway's own.
    """
    assert corpus.direct == dict.fromkeys(corpus.direct, "ok")
    assert len(corpus.direct) >= 7


def test_corpus_is_large_and_covers_every_class(request: pytest.FixtureRequest) -> None:
    """At least 300 cases, every class and every refusing layer represented; the counts go to the summary."""
    per_class = Counter(case.cls for case in CASES)
    per_layer = Counter(case.refused_by for case in CASES)
    request.config.stash[CORPUS_COUNTS] = (len(CASES), dict(per_class), dict(per_layer))
    assert len(CASES) >= MIN_CASES
    assert set(per_class) == CLASSES
    assert min(per_class.values()) >= MIN_PER_CLASS, per_class
    assert set(per_layer) == set(LAYERS), per_layer


def test_malformed_corpus_data_is_refused(tmp_path: Path) -> None:
    """The loader refuses an unknown class, layer or code, a duplicate id and a case missing its expectation."""
    (tmp_path / "tables.yaml").write_text(
        "cases:\n"
        "  - {id: dup-one, description: x, request: {sql: SELECT 1}, expect: {refused_by: firewall}}\n"
        "  - {id: dup-one, description: x, request: {sql: SELECT 1}, expect: {refused_by: policy, code: ok}}\n"
        "  - {id: dup-two, description: x, request: {sql: SELECT 1}}\n"
        "  - {id: dup-three, description: x, request: {sql: SELECT 1}, expect: {refused_by: policy}}\n"
        "  - {id: dup-three, description: x, request: {sql: SELECT 1}, expect: {refused_by: policy}}\n",
        encoding="utf-8",
    )
    (tmp_path / "rumours.yaml").write_text("cases: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="malformed") as error:
        load_corpus(tmp_path)
    message = str(error.value)
    for expected in ("unknown class 'rumours'", "refused_by 'firewall'", "code 'ok'", "exactly id", "duplicate id"):
        assert expected in message

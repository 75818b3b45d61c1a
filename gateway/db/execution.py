"""Run analysed statements on a pooled connection: timeouts, row caps, encoding.

Every statement runs as ``/* gateway comment */ SET STATEMENT
max_statement_time=N[, tx_read_only=1, sql_select_limit=M] FOR <sql>`` built
here from the analysed (regenerated) SQL with the caller's parameters escaped
by the driver. Read grants run with ``tx_read_only=1`` so MariaDB refuses a
write the classifier might have missed; a read-grant transaction runs as
``START TRANSACTION READ ONLY``. A connection whose session may be dirty (an
error, a timeout, a cancelled request, an unread result) is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from asyncmy import errors as db_errors
from asyncmy.cursors import SSCursor

from gateway.db.encoding import TYPE_NAMES, JSONValue, dump_rows
from gateway.db.pools import Pooled
from gateway.errors import (
    DatabaseError,
    DatabaseUnavailable,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    StatementTimeout,
)
from gateway.policy.decide import Decision
from gateway.settings import LimitSettings
from gateway.sql.statements import Kind, Statement

ER_STATEMENT_TIMEOUT = 1969
ER_QUERY_INTERRUPTED = 1317
# The client library's own errors (CR_*: lost connection, server gone, ...) are 2000-2999;
# the server's own numbers run from 1000 up into the 4000s, so a number alone past 2000 says nothing.
CLIENT_ERRORS = range(2000, 3000)
# Server errors that mean the server refuses or ends the session, not the statement.
SERVER_UNAVAILABLE = frozenset({1040, 1053, 1927})  # too many connections, shutdown, connection killed
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # MariaDB's BIGINT and BIGINT UNSIGNED together
TIMEOUT_GRACE = 2.0  # seconds the client waits beyond max_statement_time
_UNSAFE_COMMENT = re.compile(r"[^A-Za-z0-9@._+\-]")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one statement may use, resolved from the decision and the request."""

    timeout: float  # seconds
    max_rows: int
    max_bytes: int
    read_only: bool


def limits_for(
    settings: LimitSettings, decision: Decision, requested_rows: int | None, *, stream: bool = False
) -> Limits:
    """What a statement the ``decision`` allows may use: the tightest of the gateway's caps, the grant's, the request's.

    A stream keeps memory flat, so its row cap starts from ``max_stream_rows``.
    """
    caps = [settings.max_stream_rows if stream else settings.max_rows]
    caps.extend(cap for cap in (decision.max_rows, requested_rows) if cap is not None)
    timeout = min(decision.statement_timeout or settings.default_statement_timeout, settings.max_statement_timeout)
    return Limits(
        timeout=timeout, max_rows=min(caps), max_bytes=settings.max_result_bytes, read_only=decision.access == "read"
    )


@dataclass(slots=True)
class Result:
    """One statement's result, JSON-ready."""

    columns: list[dict[str, str]]
    rows: orjson.Fragment  # the rows as one serialised JSON array, spliced into the reply as is
    row_count: int
    truncated: bool
    rows_affected: int | None
    last_insert_id: int | None


class Probe(Protocol):
    """Reads a dry run makes around each statement of its transaction (statement review's samples)."""

    async def before(self, conn: Pooled, index: int) -> None:
        """Called in the transaction before statement ``index`` runs."""
        ...

    async def after(self, conn: Pooled, index: int) -> None:
        """Called in the transaction after statement ``index`` ran."""
        ...


def comment_for(request_id: str, user: str) -> str:
    """Build the gateway's statement comment; nothing user-controlled can end it."""
    return f"/* gw request_id={_UNSAFE_COMMENT.sub('_', request_id)} user={_UNSAFE_COMMENT.sub('_', user)} */"


def bind(statement: Statement, params: Sequence[JSONValue], conn: Pooled) -> str:
    """Put the escaped parameters in place of the statement's ``?`` placeholders."""
    if len(params) != statement.placeholders:
        raise InvalidRequest(
            f"the statement has {statement.placeholders} placeholders but {len(params)} params were given"
        )
    for value in params:
        _check_bindable(value)
    parts = statement.sql_parts
    if not params:
        return parts[0]
    out = [parts[0]]
    for value, part in zip(params, parts[1:], strict=True):
        out.append(conn.raw.escape(value))
        out.append(part)
    return "".join(out)


def _check_bindable(value: JSONValue) -> None:
    """Refuse a value the driver would not bind as given (the HTTP layer refuses these first)."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        raise InvalidRequest("a parameter is an integer outside the 64-bit range")
    if type(value) is float and not math.isfinite(value):
        raise InvalidRequest("a parameter is NaN or infinite")


def wrap(sql: str, comment: str, limits: Limits, *, kind: Kind, in_transaction: bool) -> str:
    """Add the comment and the ``SET STATEMENT ... FOR`` limits the gateway enforces."""
    variables = [f"max_statement_time={limits.timeout:.3f}"]
    if limits.read_only and not in_transaction:
        variables.append("tx_read_only=1")
    if kind is Kind.READ:
        variables.append(f"sql_select_limit={limits.max_rows + 1}")
    return f"{comment} SET STATEMENT {', '.join(variables)} FOR {sql}"


def classify(exc: db_errors.MySQLError) -> GatewayError:
    """What a driver error means for the caller, by what it is rather than how large its number is.

    The timeout's numbers are ``statement_timeout``; the client library's own
    errors (2000-2999, or no number), its interface and protocol errors, and
    the server refusing or ending the session are ``database_unavailable``;
    every other server error, whatever its number (4015, 3034, ...), is
    ``database_error`` with MariaDB's errno and message.
    """
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if errno in {ER_STATEMENT_TIMEOUT, ER_QUERY_INTERRUPTED}:
        return StatementTimeout(f"the statement ran past its timeout ({message})")
    client_side = isinstance(exc, db_errors.InterfaceError | db_errors.InternalError) or errno in CLIENT_ERRORS
    if client_side or errno == 0 or errno in SERVER_UNAVAILABLE:
        return DatabaseUnavailable(f"lost the database connection ({message})")
    return DatabaseError(errno, message)


def _translate(exc: db_errors.MySQLError, conn: Pooled) -> GatewayError:
    conn.discard = True
    return classify(exc)


async def _fetch(cursor: Any, conn: Pooled, limits: Limits) -> Result:  # noqa: ANN401 - asyncmy is untyped
    description = cursor.description
    if description is None:
        return Result(
            [],
            orjson.Fragment(b"[]"),
            0,
            truncated=False,
            rows_affected=max(cursor.rowcount, 0),
            last_insert_id=cursor.lastrowid or None,
        )
    columns = [{"name": d[0], "type": TYPE_NAMES.get(d[1], str(d[1]))} for d in description]
    # Each batch is serialised once, in C, as it arrives: the byte cap counts the
    # reply's real JSON, and no per-value Python work is done for native types.
    pieces: list[bytes] = []
    count = 0
    size = 0
    batch = min(limits.max_rows + 1, 1000)
    truncated = False
    while True:
        chunk = await cursor.fetchmany(batch)
        if not chunk:
            break
        room = limits.max_rows - count
        if len(chunk) > room:
            chunk = chunk[:room]
            truncated = True
        if chunk:
            piece = dump_rows(chunk)
            size += len(piece)
            if size > limits.max_bytes:
                conn.discard = True
                raise PayloadTooLarge(f"the result is over the {limits.max_bytes}-byte cap")
            pieces.append(piece)
            count += len(chunk)
        if truncated:
            # Unread rows remain on the wire: never hand this session to anyone else.
            conn.discard = True
            break
    return Result(columns, _join(pieces), count, truncated=truncated, rows_affected=None, last_insert_id=None)


def _join(pieces: list[bytes]) -> orjson.Fragment:
    """One JSON array from several serialised arrays (``[a,b]`` + ``[c]`` -> ``[a,b,c]``)."""
    if len(pieces) == 1:
        return orjson.Fragment(pieces[0])
    return orjson.Fragment(b"[" + b",".join(piece[1:-1] for piece in pieces) + b"]")


async def _execute(conn: Pooled, sql: str, limits: Limits) -> Result:
    cursor = conn.raw.cursor(SSCursor)
    try:
        async with asyncio.timeout(limits.timeout + TIMEOUT_GRACE):
            await cursor.execute(sql)
            result = await _fetch(cursor, conn, limits)
    except TimeoutError:
        conn.discard = True
        raise StatementTimeout("the statement ran past its timeout") from None
    except db_errors.MySQLError as exc:
        raise _translate(exc, conn) from None
    if not conn.discard:
        try:
            await cursor.close()
        except db_errors.MySQLError:
            conn.discard = True
    return result


async def run_statement(
    conn: Pooled,
    statement: Statement,
    params: Sequence[JSONValue],
    limits: Limits,
    comment: str,
) -> Result:
    """Run one statement in autocommit mode."""
    sql = wrap(bind(statement, params, conn), comment, limits, kind=statement.kind, in_transaction=False)
    return await _execute(conn, sql, limits)


async def run_transaction(
    conn: Pooled,
    batch: Sequence[tuple[Statement, Sequence[JSONValue]]],
    limits: Limits,
    comment: str,
) -> list[Result]:
    """Run statements atomically: all commit or, on any error, none do."""
    results, _ = await run_then_decide(conn, batch, limits, comment, keep=lambda _: True)
    return results


async def run_then_decide(
    conn: Pooled,
    batch: Sequence[tuple[Statement, Sequence[JSONValue]]],
    limits: Limits,
    comment: str,
    *,
    keep: Callable[[list[Result]], bool],
    probe: Probe | None = None,
) -> tuple[list[Result], bool]:
    """Run statements in one transaction, then COMMIT if ``keep(results)`` else ROLLBACK; (results, committed).

    A statement review's dry run keeps nothing; its execution keeps the work
    only when the counts still match the dry run. On any error nothing commits.
    ``probe`` reads around each statement, inside the transaction.
    """
    bound = [
        wrap(bind(stmt, params, conn), comment, limits, kind=stmt.kind, in_transaction=True) for stmt, params in batch
    ]
    begin = "START TRANSACTION READ ONLY" if limits.read_only else "START TRANSACTION"
    results: list[Result] = []
    try:
        await _simple(conn, f"{comment} {begin}", limits)
        for index, sql in enumerate(bound):
            if probe is not None:
                await probe.before(conn, index)
            results.append(await _execute(conn, sql, limits))
            if conn.discard:
                raise InvalidRequest("a statement inside a transaction returned more rows than its cap")
            if probe is not None:
                await probe.after(conn, index)
        committed = keep(results)
        await _simple(conn, f"{comment} {'COMMIT' if committed else 'ROLLBACK'}", limits)
    except BaseException:
        conn.discard = True
        if conn.raw.connected:
            with contextlib.suppress(db_errors.MySQLError, TimeoutError, OSError):
                await asyncio.wait_for(conn.raw.rollback(), TIMEOUT_GRACE)
        raise
    return results, committed


async def _simple(conn: Pooled, sql: str, limits: Limits) -> None:
    try:
        async with asyncio.timeout(limits.timeout + TIMEOUT_GRACE):
            await conn.raw.query(sql)
    except TimeoutError:
        conn.discard = True
        raise StatementTimeout("the database did not answer in time") from None
    except db_errors.MySQLError as exc:
        raise _translate(exc, conn) from None

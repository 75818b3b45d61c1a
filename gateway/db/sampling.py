"""Bounded reads inside a statement review's dry run (issue 16): a table's primary key, and sample rows.

Both run on the dry run's own connection, inside its transaction, as the
grant's account, with the grant's timeout and the gateway's statement
comment. ``read_rows`` runs an analysed read (one the authorizer allowed) with
``sql_select_limit`` at ``max_rows + 1`` and returns the raw values; errors are
the gateway's (``execution.classify``), a timeout discards the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from asyncmy import errors as db_errors

from gateway.db.execution import TIMEOUT_GRACE, Limits, bind, classify, wrap
from gateway.db.pools import Pooled
from gateway.errors import DatabaseError, StatementTimeout
from gateway.sql.statements import Kind, Statement

_COLUMN_NAME = 4  # SHOW KEYS: Table, Non_unique, Key_name, Seq_in_index, Column_name, ...


async def primary_key(conn: Pooled, written: str, limits: Limits, comment: str) -> list[str]:
    """The primary key's columns of the table a statement names as ``written`` ([] without one).

    ``SHOW KEYS FROM <written>``: MariaDB resolves the name as it resolves the
    statement's (the session's database, its case rules), as the grant's account.
    """
    sql = f"{comment} SHOW KEYS FROM {written} WHERE Key_name = 'PRIMARY'"
    _, rows = await _run(conn, sql, None, limits)
    return [str(row[_COLUMN_NAME]) for row in sorted(rows, key=lambda row: int(row[3]))]


async def read_rows(
    conn: Pooled, statement: Statement, params: Sequence[Any], limits: Limits, comment: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run an allowed read in the open transaction: (column names, at most ``limits.max_rows + 1`` rows)."""
    sql = wrap(bind(statement, params, conn), comment, limits, kind=Kind.READ, in_transaction=True)
    return await _run(conn, sql, None, limits)


async def _run(
    conn: Pooled, sql: str, args: Sequence[Any] | None, limits: Limits
) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.raw.cursor()
    try:
        async with asyncio.timeout(limits.timeout + TIMEOUT_GRACE):
            await cursor.execute(sql, args)
            columns = [str(d[0]) for d in cursor.description or ()]
            rows = await cursor.fetchmany(limits.max_rows + 1)
            await cursor.close()
    except TimeoutError:
        conn.discard = True
        raise StatementTimeout("the sample read ran past its timeout") from None
    except db_errors.MySQLError as exc:
        error = classify(exc)
        # A server's refusal of one read leaves the transaction as it was; anything else ends the session.
        conn.discard = not isinstance(error, DatabaseError)
        raise error from None
    return columns, [tuple(row) for row in rows]

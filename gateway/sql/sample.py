"""The reads a statement review's dry run uses to show what a write would change (issue 16).

``derive`` builds, from a single-table ``UPDATE`` or ``DELETE``'s own checked
tree (its ``executable_sql``, parsed again), ``SELECT * FROM <its table>
[WHERE <its WHERE>] [ORDER BY <its ORDER BY>] LIMIT <min(its LIMIT, rows + 1)>``
and the params of the write that the read's placeholders take. Nothing else is
added: the read names the statement's own table only, and its literals are the
write's own characters (``regenerate`` writes them verbatim, SECURITY rule 25).
Anything else (INSERT, REPLACE, joins, USING, RETURNING, WITH, a LIMIT that is
not an integer) gets a reason instead of a read: counts only.

``by_primary_key`` is the read of the same rows after an UPDATE, by their
primary key values (bound as params). The caller analyses and decides both
reads like any other (the gateway's authorizer), so neither is trusted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from gateway.sql.dialect import MariaDB
from gateway.sql.functions import regenerate
from gateway.sql.statements import Kind, Statement

_DIALECT = MariaDB()
_EXTRA_UPDATE = ("from", "from_", "with", "with_", "returning", "joins", "hint")
_EXTRA_DELETE = ("tables", "using", "returning", "cluster", "with", "with_", "hint")


@dataclass(frozen=True, slots=True)
class SampleRead:
    """The read of the rows a write would touch: its SQL (``?`` kept) and the params it takes, in order."""

    sql: str
    params: tuple[object, ...]
    table: str  # "db.table", the write's only table (lower case, as the policy names it)
    written: str  # the table as the write names it (no alias): MariaDB resolves it as it resolves the write


def derive(statement: Statement, params: Sequence[object], rows: int) -> SampleRead | str:
    """The read of at most ``rows + 1`` rows a single-table UPDATE / DELETE would touch, or why there is none."""
    if statement.kind is not Kind.WRITE or statement.command not in {"UPDATE", "DELETE"}:
        return f"{statement.command}: counts only (rows are sampled for single-table UPDATE and DELETE)"
    if len(statement.tables) != 1:
        return "a write over several tables: counts only"
    tree = _single_table_write(statement.executable_sql)
    if isinstance(tree, str):
        return tree
    table = tree.args["this"]
    before = _count(table) + sum(_count(e) for e in tree.args.get("expressions") or [])
    where, order, limit = (tree.args.get(k) for k in ("where", "order", "limit"))
    end = before + _count(where) + _count(order)
    cap = _cap(limit, params[end] if end < len(params) else None, rows + 1)
    if isinstance(cap, str):
        return cap
    name = table.copy()
    name.set("alias", None)
    written = name.sql(dialect=_DIALECT)
    select = exp.Select(expressions=[exp.Star()])
    select.set("from_", exp.From(this=table))
    for key, node in (("where", where), ("order", order)):
        if node is not None:
            select.set(key, node)
    select.set("limit", exp.Limit(expression=exp.Literal.number(cap)))
    sql, _ = regenerate(select, statement.executable_sql)
    return SampleRead(sql=sql, params=tuple(params[before:end]), table=next(iter(statement.tables)), written=written)


def _single_table_write(sql: str) -> exp.Update | exp.Delete | str:
    try:
        tree = _DIALECT.parse(sql)[0]
    except Exception:  # noqa: BLE001 - text the gateway made: any failure means no sample, never a failed dry run
        return "the statement could not be read again: counts only"
    if not isinstance(tree, exp.Update | exp.Delete) or not isinstance(tree.args.get("this"), exp.Table):
        return "not a single-table write: counts only"
    extra = _EXTRA_UPDATE if isinstance(tree, exp.Update) else _EXTRA_DELETE
    if any(tree.args.get(arg) for arg in extra) or tree.args["this"].find(exp.Join) is not None:
        return "a write with joins, USING, WITH or RETURNING: counts only"
    return tree


def _cap(limit: exp.Expr | None, param: object, cap: int) -> int | str:
    """The sample read's LIMIT: the smaller of ``cap`` and the write's own (a literal or its bound param)."""
    if limit is None:
        return cap
    value = limit.args.get("expression")
    if isinstance(value, exp.Placeholder):
        if type(param) is not int or param < 0:
            return "a LIMIT that is not an integer: counts only"
        return min(cap, param)
    if isinstance(value, exp.Literal) and value.is_int:
        return min(cap, int(value.name))
    return "a LIMIT the gateway cannot read: counts only"


def by_primary_key(written: str, key: Sequence[str], count: int) -> str:
    """``SELECT * FROM <written> WHERE (`k1` = ? AND `k2` = ?) OR ...`` for ``count`` rows (``derive``'s table)."""
    one = " AND ".join(f"{_quote(column)} = ?" for column in key)
    matches = " OR ".join(f"({one})" for _ in range(count))
    return f"SELECT * FROM {written} WHERE {matches}"  # noqa: S608 - generated name, quoted columns, ? values


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _count(node: exp.Expr | None) -> int:
    return 0 if node is None else sum(1 for _ in node.find_all(exp.Placeholder))

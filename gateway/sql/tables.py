"""Every table a parsed statement touches, as lower-case ``db.table`` (SECURITY rule 14).

Over-listing is the safe error: a name listed that MariaDB would not touch
only makes the policy stricter. So a table reference is dropped only when it
certainly names something else: a common table expression in scope, an index
or database name, or a multi-table ``DELETE`` target that repeats an alias.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import StatementRejected

# NEXTVAL(s) and friends take a sequence, which MariaDB stores as a table.
_SEQUENCE_FUNCTIONS = frozenset({"NEXTVAL", "LASTVAL", "SETVAL"})
_NOT_TABLES: dict[type[exp.Expr], set[str]] = {
    exp.Drop: {"INDEX", "DATABASE", "SCHEMA"},
    exp.Create: {"DATABASE", "SCHEMA"},
}


def tables_of(tree: exp.Expr, default_database: str) -> frozenset[str]:
    """Every table in every subquery, CTE, set operation, join and DML target of ``tree``."""
    found: set[str] = set()
    for node in tree.find_all(exp.Table, exp.Anonymous):
        if isinstance(node, exp.Anonymous):
            first = node.expressions[0] if node.expressions else None
            if node.name.upper() in _SEQUENCE_FUNCTIONS and isinstance(first, exp.Column):
                found.add(_qualified(first.name, first.table, "", default_database))
        elif (
            isinstance(node, exp.Table)
            and isinstance(node.this, exp.Identifier)
            and not (is_dual(node) or _names_something_else(node))
        ):
            found.add(_qualified(node.name, node.db, node.catalog, default_database))
        # Table functions (JSON_TABLE) are not tables; they are listed as functions.
    return frozenset(found)


def is_dual(table: exp.Expr | None) -> bool:
    """``FROM DUAL``: MariaDB's reserved dummy table, which names no table at all."""
    return (
        isinstance(table, exp.Table)
        and isinstance(table.this, exp.Identifier)
        and not table.this.quoted
        and table.name.upper() == "DUAL"
        and not (table.db or table.alias or table.args.get("joins"))
        and isinstance(table.parent, exp.From)
    )


def _qualified(name: str, db: str, catalog: str, default_database: str) -> str:
    if catalog:
        raise StatementRejected(f"three-part table name {catalog}.{db}.{name} is not valid")
    if "." in name or "." in db:
        raise StatementRejected("table and database names containing '.' are not allowed")
    db = db or default_database
    if not db:
        raise StatementRejected(f"table {name} needs a database: the target has no default")
    return f"{db}.{name}".lower()


def _names_something_else(table: exp.Table) -> bool:
    parent = table.parent
    key = table.arg_key
    if isinstance(parent, (exp.Drop, exp.Create)) and key in {"this", "tables"}:
        kind = str(parent.args.get("kind") or "").upper()
        if kind in _NOT_TABLES[type(parent)]:
            return True
    if isinstance(parent, exp.Use):
        return True
    if isinstance(parent, exp.Delete) and key == "tables":
        return not table.db and table.name in _delete_aliases(parent)
    return not table.db and not _is_dml_target(table) and _is_cte_reference(table)


def _delete_aliases(delete: exp.Delete) -> set[str]:
    """Aliases of tables in the FROM / USING list of this very DELETE."""
    return {
        table.alias
        for table in delete.find_all(exp.Table)
        if table.alias and table.find_ancestor(exp.Query, exp.Delete) is delete
    }


def _is_dml_target(table: exp.Table) -> bool:
    """INSERT / UPDATE / DELETE targets are always real tables, never CTEs."""
    node: exp.Expr = table
    parent = table.parent
    if isinstance(parent, exp.Schema):  # INSERT INTO t (a, b): the table sits inside the column list
        node, parent = parent, parent.parent
    return isinstance(parent, (exp.Insert, exp.Update, exp.Delete)) and node.arg_key == "this"


def _is_cte_reference(table: exp.Table) -> bool:
    """Whether an unqualified name resolves to a CTE visible where it is used.

    A CTE is visible in the query its WITH belongs to and in the later CTEs of
    the same WITH (and in itself when RECURSIVE). Names are compared exactly:
    where MariaDB would compare without case, we list a table too many.
    """
    name = table.name
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.CTE) and child is node.this and isinstance(node.parent, exp.With):
            ctes = node.parent.expressions
            position = next(i for i, cte in enumerate(ctes) if cte is node)
            visible = ctes[: position + 1] if node.parent.args.get("recursive") else ctes[:position]
            if any(cte.alias == name for cte in visible):
                return True
        else:
            with_ = node.args.get("with_")
            if (
                isinstance(with_, exp.With)
                and child is not with_
                and any(cte.alias == name for cte in with_.expressions)
            ):
                return True
        child, node = node, node.parent
    return False

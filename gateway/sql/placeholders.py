"""A ``?`` stands only where MariaDB accepts a value (SECURITY rule 24).

Parameters are bound into the text as escaped literals, so a placeholder where
a name belongs would let a bound value choose the object a statement touches:
``SELECT * FROM hr.?`` with ``[2024]`` runs ``SELECT * FROM hr.2024``, a table
no rule ever saw. Placeholders are therefore checked against an allow-list of
value positions in the parsed tree, before anything is bound; every other
position (a table, schema, column, alias, index, partition, window, collation,
a ``USING`` column, an ``INSERT`` column list, the left side of ``SET a = ...``)
is refused. A placeholder that is a whole ``ORDER BY`` / ``GROUP BY`` /
``PARTITION BY`` item is refused too: bound to a number it would be read as a
column position, not as the constant a prepared statement would see.

The regenerated text is checked once more, character by character, so that no
``?`` touches a ``.`` or a backtick (``a.?``, ``?.b``) whatever the tree said.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.errors import StatementRejected

# Parent types whose every argument is an expression (a value may stand anywhere in them),
# except the argument keys listed in _NAME_ARGS.
_VALUE_PARENTS: tuple[type[exp.Expr], ...] = (
    exp.Binary,  # comparisons, arithmetic, LIKE, AND/OR, ... (minus Dot and COLLATE's right side)
    exp.Unary,  # NOT, -, ~, ( )
    exp.Func,  # function arguments (minus MATCH's column list)
    exp.Tuple,  # VALUES rows, (a, b) = (?, ?), INSERT ... SET values
    exp.In,
    exp.Between,
    exp.Case,
    exp.If,
    exp.Is,
    exp.Interval,
    exp.Where,
    exp.Having,
    exp.Limit,
    exp.Offset,
    exp.Alias,  # SELECT ? AS x (the alias itself is an identifier, never a placeholder node)
    exp.Select,  # projections
    exp.DefaultColumnConstraint,
)
# (parent type, argument key) pairs inside those parents that hold names, not values.
_NAME_ARGS: frozenset[tuple[type[exp.Expr], str]] = frozenset(
    {
        (exp.Dot, "this"),
        (exp.Dot, "expression"),
        (exp.Collate, "expression"),
        (exp.MatchAgainst, "expressions"),
        (exp.Alias, "alias"),
    }
)
# Exact parent types refused outright, whatever the base classes above say.
_NAME_PARENTS: tuple[type[exp.Expr], ...] = (exp.Column, exp.Table, exp.Identifier, exp.TableAlias, exp.Schema)
_NAME_MARKS = ".`"


def check_placeholders(tree: exp.Expr) -> int:
    """Refuse any ``?`` outside a value position; return how many there are."""
    count = 0
    for node in tree.find_all(exp.Placeholder):
        if node.this:
            raise StatementRejected("only `?` placeholders are allowed")
        if not _in_value_position(node):
            raise StatementRejected(
                "a `?` placeholder may stand only where a value may stand, never for a table, column or other name"
            )
        count += 1
    return count


def _in_value_position(node: exp.Placeholder) -> bool:
    parent = node.parent
    key = node.arg_key
    if parent is None or isinstance(parent, _NAME_PARENTS):
        return False
    if any(isinstance(parent, kind) and key == name for kind, name in _NAME_ARGS):
        return False
    if isinstance(parent, exp.EQ) and isinstance(parent.parent, (exp.Update, exp.OnConflict)) and key == "this":
        return False  # UPDATE t SET ? = 1: the left side of an assignment is a column
    return isinstance(parent, _VALUE_PARENTS) and not isinstance(parent, exp.Dot)


def check_executable(sql: str, offsets: tuple[int, ...]) -> None:
    """Refuse regenerated text in which a ``?`` sits next to a ``.`` or a backtick (a name)."""
    for offset in offsets:
        if _neighbour(sql, offset, -1) in _NAME_MARKS or _neighbour(sql, offset, 1) in _NAME_MARKS:
            raise StatementRejected("a `?` placeholder may stand only where a value may stand")


def _neighbour(sql: str, offset: int, step: int) -> str:
    """The first character that is not whitespace from ``offset`` in direction ``step`` ("" at an end)."""
    index = offset + step
    while 0 <= index < len(sql) and sql[index].isspace():
        index += step
    return sql[index] if 0 <= index < len(sql) else "\0"

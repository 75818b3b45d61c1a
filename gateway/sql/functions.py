"""Function names: the read allow-list, and naming each call the way MariaDB will run it.

The statement that runs is the one sqlglot regenerates, so a call is named
after what the generator writes (``IFNULL(a, b)`` runs as ``COALESCE(a, b)``),
not after what the caller typed. ``regenerate`` writes the SQL and records each
call's name in the same pass.

Naming rules that keep the allow-list sound:

* A call qualified with a database (``shop.f()``) keeps its qualifier
  (``SHOP.F``): it is a stored function and never matches a built-in name.
* A call whose name is a quoted identifier (```if`(1)``) keeps its backticks:
  MariaDB sends quoted names that are not native functions to stored
  functions, so they must never match a built-in name either.
* ``SAFE_FUNCTIONS`` holds only MariaDB built-ins (or reserved-word forms such
  as ``CASE``), which a stored function cannot shadow when called unqualified.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.generators.mysql import MySQLGenerator

from gateway.sql.dialect import TYPED_LITERAL_TYPES, MariaDB, TypedLiteral
from gateway.sql.literals import LITERAL_TYPES, verbatim
from gateway.sql.tables import is_dual

# Side-effect-free built-ins. Deliberately absent: SLEEP, BENCHMARK, LOAD_FILE,
# GET_LOCK, RELEASE_LOCK, RELEASE_ALL_LOCKS, IS_FREE_LOCK, IS_USED_LOCK,
# MASTER_POS_WAIT, MASTER_GTID_WAIT, NEXTVAL, SETVAL, LASTVAL, LAST_INSERT_ID
# (with an argument it sets session state), ROW_COUNT, FOUND_ROWS, USER and
# CONNECTION_ID (gateway internals), and anything sqlglot writes under a name
# MariaDB lacks (REGEXP_LIKE, for one, would resolve to a stored function).
_AGGREGATES = """
    AVG BIT_AND BIT_OR BIT_XOR COUNT GROUP_CONCAT JSON_ARRAYAGG JSON_OBJECTAGG MAX
    MIN STD STDDEV STDDEV_POP STDDEV_SAMP SUM VARIANCE VAR_POP VAR_SAMP CUME_DIST
    DENSE_RANK FIRST_VALUE LAG LAST_VALUE LEAD MEDIAN NTH_VALUE NTILE PERCENT_RANK
    PERCENTILE_CONT PERCENTILE_DISC RANK ROW_NUMBER
"""  # aggregates and window functions

_CONTROL = """
    CASE CAST COALESCE COLLATE CONVERT EXISTS GREATEST IF IFNULL ISNULL LEAST MATCH
    NULLIF NVL NVL2 REGEXP ROW
"""  # control flow, casts, reserved-word forms

_STRINGS = """
    ASCII BIN BIT_LENGTH CHAR CHARACTER_LENGTH CHAR_LENGTH CHARSET CHR COERCIBILITY
    COLLATION CONCAT CONCAT_WS ELT EXPORT_SET FIELD FIND_IN_SET FORMAT FROM_BASE64
    HEX INSERT INSTR LCASE LEFT LENGTH LENGTHB LOCATE LOWER LPAD LTRIM MAKE_SET MID
    NATURAL_SORT_KEY OCT OCTET_LENGTH ORD POSITION QUOTE REGEXP_INSTR REGEXP_REPLACE
    REGEXP_SUBSTR REPEAT REPLACE REVERSE RIGHT RPAD RTRIM SFORMAT SOUNDEX SPACE
    STRCMP SUBSTR SUBSTRING SUBSTRING_INDEX TO_BASE64 TO_CHAR TRIM UCASE UNHEX UPPER
"""  # strings

_HASHING = """
    AES_DECRYPT AES_ENCRYPT COMPRESS CRC32 CRC32C MD5 SHA SHA1 SHA2 UNCOMPRESS
    UNCOMPRESSED_LENGTH
"""  # hashing, compression, encryption (pure)

_NUMBERS = """
    ABS ACOS ASIN ATAN ATAN2 BIT_COUNT CEIL CEILING CONV COS COT DEGREES EXP FLOOR
    LN LOG LOG10 LOG2 MOD PI POW POWER RADIANS RAND ROUND SIGN SIN SQRT TAN TRUNCATE
"""  # numbers

_DATES = """
    ADDDATE ADDTIME CONVERT_TZ CURDATE CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP
    CURTIME DATE DATEDIFF DATE_ADD DATE_FORMAT DATE_SUB DAY DAYNAME DAYOFMONTH
    DAYOFWEEK DAYOFYEAR EXTRACT FROM_DAYS FROM_UNIXTIME GET_FORMAT HOUR LAST_DAY
    LOCALTIME LOCALTIMESTAMP MAKEDATE MAKETIME MICROSECOND MINUTE MONTH MONTHNAME
    NOW PERIOD_ADD PERIOD_DIFF QUARTER SECOND SEC_TO_TIME STR_TO_DATE SUBDATE
    SUBTIME SYSDATE TIME TIMEDIFF TIMESTAMP TIMESTAMPADD TIMESTAMPDIFF TIME_FORMAT
    TIME_TO_SEC TO_DAYS TO_SECONDS UNIX_TIMESTAMP UTC_DATE UTC_TIME UTC_TIMESTAMP
    WEEK WEEKDAY WEEKOFYEAR YEAR YEARWEEK
"""  # dates and times

_JSON = """
    JSON_ARRAY JSON_ARRAY_APPEND JSON_ARRAY_INSERT JSON_COMPACT JSON_CONTAINS
    JSON_CONTAINS_PATH JSON_DEPTH JSON_DETAILED JSON_EQUALS JSON_EXISTS JSON_EXTRACT
    JSON_INSERT JSON_KEYS JSON_LENGTH JSON_LOOSE JSON_MERGE JSON_MERGE_PATCH
    JSON_MERGE_PRESERVE JSON_NORMALIZE JSON_OBJECT JSON_OVERLAPS JSON_QUERY
    JSON_QUOTE JSON_REMOVE JSON_REPLACE JSON_SEARCH JSON_SET JSON_TABLE
    JSON_TYPE JSON_UNQUOTE JSON_VALID JSON_VALUE
"""  # JSON

_MISC = """
    DATABASE SCHEMA SYS_GUID UUID INET_ATON INET_NTOA INET6_ATON INET6_NTOA IS_IPV4
    IS_IPV4_COMPAT IS_IPV4_MAPPED IS_IPV6
"""  # identifiers and network helpers

SAFE_FUNCTIONS: frozenset[str] = frozenset(
    (_AGGREGATES + _CONTROL + _STRINGS + _HASHING + _NUMBERS + _DATES + _JSON + _MISC).split()
)

_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DIALECT = MariaDB()


def _dotted(node: exp.Expr) -> str:
    """``shop`` / ``a.b`` of a qualifier, upper case."""
    if isinstance(node, exp.Dot):
        return f"{_dotted(node.this)}.{_dotted(node.expression)}"
    if isinstance(node, exp.Column):
        return ".".join(part.name for part in node.parts).upper()
    return node.name.upper()


def call_name(node: exp.Func, generated: str) -> str:
    """The name MariaDB calls for ``node``, given the SQL written for it."""
    if isinstance(node, exp.Anonymous):
        quoted = isinstance(node.this, exp.Identifier) and node.this.quoted
        name = f"`{node.name.upper()}`" if quoted else node.name.upper()
    else:
        head = _HEAD.match(generated)
        end = head.end() if head else 0
        whole_call = end < len(generated) and generated[end] == "(" and generated[-1] == ")"
        # `NAME(...)` or a bare `NAME` (CURRENT_DATE); operator-style output
        # (`a ->> '$.x'`, `x COLLATE c`, `CASE ...`) takes sqlglot's own name.
        name = head.group().upper() if head and (end == len(generated) or whole_call) else node.sql_name()
    parent = node.parent
    if isinstance(parent, exp.Dot) and node.arg_key == "expression":
        return f"{_dotted(parent.this)}.{name}"
    return name


class _RecordingGenerator(MySQLGenerator):
    """The MySQL generator, recording every call it writes, keeping literals verbatim, fixing MariaDB gaps.

    ``source`` is the text the tree was parsed from: every literal read from it
    is written back as its own characters (``sqlliterals.verbatim``).
    """

    def __init__(self, source: str) -> None:
        super().__init__(dialect=_DIALECT, comments=False)
        self.functions: set[str] = set()
        self._source = source

    def sql(
        self,
        expression: str | exp.Expr | None,
        key: str | None = None,
        comment: bool = True,  # noqa: FBT001, FBT002 - overrides sqlglot's signature
    ) -> str:
        if key is None and isinstance(expression, LITERAL_TYPES):
            text = verbatim(expression, self._source)
            if text is not None:
                return text
        if key is None and isinstance(expression, TypedLiteral):
            return f"{TYPED_LITERAL_TYPES[expression.args['to'].this]} {self.sql(expression.this)}"
        generated = super().sql(expression, key, comment)
        # AND / OR / XOR are Func subclasses in sqlglot, but operators in SQL.
        if key is None and generated and isinstance(expression, exp.Func) and not isinstance(expression, exp.Connector):
            if isinstance(expression, exp.RegexpLike) and not expression.args.get("flag"):
                self.functions.add("REGEXP")
            else:
                self.functions.add(call_name(expression, generated))
        return generated

    def identifier_sql(self, expression: exp.Identifier) -> str:
        """``FROM DUAL`` unquoted: sqlglot would write `DUAL`, a real table name."""
        if expression.arg_key == "this" and is_dual(expression.parent):
            return "DUAL"
        return super().identifier_sql(expression)

    def regexplike_sql(self, expression: exp.RegexpLike) -> str:
        """``a REGEXP b``: MariaDB has no REGEXP_LIKE function (MySQL 8 has).

        Operands and the whole are parenthesised unless already atomic, so the
        operator binds exactly as the function call did.
        """
        if expression.args.get("flag"):
            return self.function_fallback_sql(expression)
        this, pattern = (self._operand(expression.args.get(key)) for key in ("this", "expression"))
        generated = f"{this} REGEXP {pattern}"
        return generated if isinstance(expression.parent, exp.Paren) else f"({generated})"

    def _operand(self, node: exp.Expr | None) -> str:
        generated = self.sql(node)
        atomic = (exp.Column, exp.Literal, exp.Placeholder, exp.Paren, exp.Subquery)
        return generated if isinstance(node, atomic) else f"({generated})"

    def lock_sql(self, expression: exp.Lock) -> str:
        """``LOCK IN SHARE MODE``: MariaDB has no ``FOR SHARE``."""
        generated = super().lock_sql(expression)
        if generated.startswith("FOR SHARE"):
            return "LOCK IN SHARE MODE" + generated.removeprefix("FOR SHARE")
        return generated


def regenerate(tree: exp.Expr, source: str) -> tuple[str, frozenset[str]]:
    """Write ``tree`` (parsed from ``source``) as MariaDB SQL without comments; return it and the calls it makes.

    The generator may rewrite ``tree`` in place, so call this last.
    """
    generator = _RecordingGenerator(source)
    sql = generator.generate(tree, copy=False)
    return sql, frozenset(generator.functions)

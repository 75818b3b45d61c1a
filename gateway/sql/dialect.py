"""sqlglot's MySQL dialect, read the way MariaDB reads it where the two differ in meaning.

Three parser changes, each keeping a construct as written instead of letting
sqlglot rewrite it into something MariaDB evaluates differently:

* calls keep their name and every argument (sqlglot's builders turn
  ``CHARACTER_LENGTH(s)``, characters, into ``LENGTH(s)``, bytes, and drop
  arguments they do not expect); only the calls with MariaDB's own special
  syntax (``CAST(x AS t)``, ``TRIM(LEADING x FROM y)``, ...) keep sqlglot's parsers;

* ``TYPE 'literal'`` stays a ``TypedLiteral`` (sqlglot makes every such form a
  ``CAST``, but ``DATE '2024-13-01'`` is an error in MariaDB where the cast is
  a NULL, and ``DECIMAL '1'`` is no MariaDB syntax at all);
* ``INTERVAL expr unit`` keeps ``expr`` as parsed and reads exactly one unit
  from MariaDB's list (sqlglot turns ``INTERVAL 1.5 DAY`` into ``INTERVAL
  '1.5' DAY``, one day less, and reads ``INTERVAL 1 DAY + '2024-01-01'`` as a
  sum of two intervals).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.parsers.mysql import MySQLParser
from sqlglot.tokenizer_core import TokenType

# The type keywords MariaDB accepts before a string literal (sqlglot's MySQL reads TIMESTAMP as TIMESTAMPTZ).
TYPED_LITERAL_TYPES = {
    exp.DType.DATE: "DATE",
    exp.DType.TIME: "TIME",
    exp.DType.TIMESTAMP: "TIMESTAMP",
    exp.DType.TIMESTAMPTZ: "TIMESTAMP",
}
SPECIAL_SYNTAX_FUNCTIONS = frozenset(
    {"CAST", "CHAR", "CONVERT", "EXTRACT", "GROUP_CONCAT", "JSON_TABLE", "MATCH", "POSITION", "SUBSTR", "SUBSTRING",
     "TRIM", "VALUES"}
)  # fmt: skip
# MariaDB's reserved words (https://mariadb.com/kb/en/reserved-words/): never a name unless quoted.
# sqlglot reads some as names where MariaDB refuses the statement (`SELECT 0 TRUE`: an alias for sqlglot).
RESERVED_WORDS = frozenset(
    """ACCESSIBLE ADD ALL ALTER ANALYZE AND AS ASC ASENSITIVE BEFORE BETWEEN BIGINT BINARY BLOB BOTH BY CALL CASCADE
    CASE CHANGE CHAR CHARACTER CHECK COLLATE COLUMN CONDITION CONSTRAINT CONTINUE CONVERT CREATE CROSS CURRENT_DATE
    CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATABASE DATABASES DAY_HOUR DAY_MICROSECOND
    DAY_MINUTE DAY_SECOND DEC DECIMAL DECLARE DEFAULT DELAYED DELETE DELETE_DOMAIN_ID DESC DESCRIBE DETERMINISTIC
    DISTINCT DISTINCTROW DIV DO_DOMAIN_IDS DOUBLE DROP DUAL EACH ELSE ELSEIF ENCLOSED ESCAPED EXCEPT EXISTS EXIT
    EXPLAIN FALSE FETCH FLOAT FLOAT4 FLOAT8 FOR FORCE FOREIGN FROM FULLTEXT GENERAL GRANT GROUP HAVING HIGH_PRIORITY
    HOUR_MICROSECOND HOUR_MINUTE HOUR_SECOND IF IGNORE IGNORE_DOMAIN_IDS IGNORE_SERVER_IDS IN INDEX INFILE INNER
    INOUT INSENSITIVE INSERT INT INT1 INT2 INT3 INT4 INT8 INTEGER INTERSECT INTERVAL INTO IS ITERATE JOIN KEY KEYS
    KILL LEADING LEAVE LEFT LIKE LIMIT LINEAR LINES LOAD LOCALTIME LOCALTIMESTAMP LOCK LONG LONGBLOB LONGTEXT LOOP
    LOW_PRIORITY MASTER_HEARTBEAT_PERIOD MASTER_SSL_VERIFY_SERVER_CERT MATCH MAXVALUE MEDIUMBLOB MEDIUMINT
    MEDIUMTEXT MIDDLEINT MINUTE_MICROSECOND MINUTE_SECOND MOD MODIFIES NATURAL NOT NO_WRITE_TO_BINLOG NULL NUMERIC
    OFFSET ON OPTIMIZE OPTION OPTIONALLY OR ORDER OUT OUTER OUTFILE OVER PAGE_CHECKSUM PARSE_VCOL_EXPR PARTITION
    POSITION PRECISION PRIMARY PROCEDURE PURGE RANGE READ READS READ_WRITE REAL RECURSIVE REF_SYSTEM_ID REFERENCES
    REGEXP RELEASE RENAME REPEAT REPLACE REQUIRE RESIGNAL RESTRICT RETURN RETURNING REVOKE RIGHT RLIKE ROW_NUMBER ROWS
    SCHEMA SCHEMAS SECOND_MICROSECOND SELECT SENSITIVE SEPARATOR SET SHOW SIGNAL SLOW SMALLINT SPATIAL SPECIFIC SQL
    SQLEXCEPTION SQLSTATE SQLWARNING SQL_BIG_RESULT SQL_CALC_FOUND_ROWS SQL_SMALL_RESULT SSL STARTING
    STATS_AUTO_RECALC STATS_PERSISTENT STATS_SAMPLE_PAGES STRAIGHT_JOIN TABLE TERMINATED THEN TINYBLOB TINYINT
    TINYTEXT TO TRAILING TRIGGER TRUE UNDO UNION UNIQUE UNLOCK UNSIGNED UPDATE USAGE USE USING UTC_DATE UTC_TIME
    UTC_TIMESTAMP VALUES VARBINARY VARCHAR VARCHARACTER VARYING WHEN WHERE WHILE WINDOW WITH WRITE XOR YEAR_MONTH
    ZEROFILL""".split()  # noqa: SIM905 - a word list reads best as text, the way the docs print it
)
INTERVAL_UNITS = frozenset(
    """MICROSECOND SECOND MINUTE HOUR DAY WEEK MONTH QUARTER YEAR SECOND_MICROSECOND MINUTE_MICROSECOND
    MINUTE_SECOND HOUR_MICROSECOND HOUR_SECOND HOUR_MINUTE DAY_MICROSECOND DAY_SECOND DAY_MINUTE DAY_HOUR
    YEAR_MONTH""".split()  # noqa: SIM905 - a word list reads best as text
)


class TypedLiteral(exp.Expression, exp.Condition):
    """``DATE '2024-01-01'``: a typed literal, which sqlglot would otherwise turn into a cast."""

    arg_types = {"this": True, "to": True}  # noqa: RUF012 - sqlglot's own declaration style


def _typed_literal(_parser: MySQLParser, this: exp.Expr, to: exp.DataType) -> TypedLiteral:
    return TypedLiteral(this=this, to=to)


class _Parser(MySQLParser):
    """sqlglot's MySQL parser with the two changes in the module docstring."""

    TYPE_LITERAL_PARSERS = dict.fromkeys(exp.DType, _typed_literal)
    # Calls are kept as written (name and every argument): sqlglot's builders rename some
    # (CHARACTER_LENGTH becomes LENGTH, which counts bytes) and drop extra arguments.
    FUNCTIONS: ClassVar[dict[str, Callable[..., exp.Expr]]] = {}
    # Only calls with MariaDB's own special syntax keep their parsers (CHAR(65 USING utf8mb4),
    # TRIM(LEADING 'x' FROM y), GROUP_CONCAT(a ORDER BY b SEPARATOR ','), ...); sqlglot's others
    # rename calls (CHR becomes CHAR) or read syntax MariaDB does not have.
    FUNCTION_PARSERS: ClassVar[dict[str, Callable[..., exp.Expr | None]]] = {
        name: parser for name, parser in MySQLParser.FUNCTION_PARSERS.items() if name in SPECIAL_SYNTAX_FUNCTIONS
    }

    def _parse_if(self) -> exp.Expr | None:
        """``IF(a, b, c)`` as a plain call: sqlglot's ``If`` adds a third argument to ``IF(a, b)``."""
        if not self._match(TokenType.L_PAREN):
            self._retreat(self._index - 1)
            return None
        args = self._parse_csv(self._parse_assignment)
        self._match_r_paren()
        return self.expression(exp.Anonymous(this="IF", expressions=args))

    def _parse_interval(
        self,
        require_interval: bool = True,  # noqa: FBT001, FBT002 - sqlglot's signature
        parse_function_unit: bool = True,  # noqa: ARG002, FBT001, FBT002 - sqlglot's signature
    ) -> exp.Add | exp.Interval | None:
        index = self._index
        if not self._match(TokenType.INTERVAL) and require_interval:
            return None
        this = self._parse_primary() if self._match(TokenType.STRING, advance=False) else self._parse_term()
        unit = self._curr.text.upper() if self._curr is not None else ""
        if this is None or unit not in INTERVAL_UNITS:
            if isinstance(this, exp.Column) and not require_interval:
                self._retreat(index)
                return None
            self.raise_error(f"INTERVAL needs a value and one of MariaDB's units, not {unit[:20]!r}")
        self._advance()
        return self.expression(exp.Interval(this=this, unit=exp.var(unit)))


class MariaDB(MySQL):
    """The MySQL dialect with the parser above: the one dialect statements are read with."""

    Parser = _Parser  # sqlglot's dialect metaclass installs a nested ``Parser`` as the dialect's parser

r"""``SHOW GRANTS`` lines -> typed ``Privilege`` items; what cannot be parsed is kept as ``UNPARSED``.

MariaDB prints an account's rights as ``GRANT`` statements, one per object::

    GRANT PROCESS, FILE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*..' WITH MAX_QUERIES_PER_HOUR 10
    GRANT SELECT, INSERT ON `shop\_x`.* TO `u`@`%` WITH GRANT OPTION
    GRANT SELECT, SELECT (`a`, `b``c`), UPDATE ON `shop`.`t1` TO `u`@`%`
    GRANT EXECUTE ON FUNCTION `shop`.`f` TO `u`@`%`
    GRANT PROXY ON ''@'%' TO `u`@`%`
    GRANT `some_role` TO `u`@`%` WITH ADMIN OPTION
    GRANT SELECT ON `shop`.* TO PUBLIC
    SET DEFAULT ROLE `some_role` FOR `u`@`%`

Each privilege becomes one item at its level (global, database, table,
column, routine, proxy, role; ``WITH GRANT OPTION`` is a ``GRANT OPTION``
item on the same object). A database-level name is kept as MariaDB stores
it: a ``LIKE`` pattern where ``_`` and ``%`` are wildcards unless escaped
with ``\``. The parser fails closed: a line it does not fully understand
(another statement, an unknown clause, a stray quote) becomes one
``UNPARSED`` item, which the privilege check always counts as drift. Its
summary never carries the line's string literals (password hashes live there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ident>`(?:[^`]|``)*`)
      | (?P<string>'(?:[^'\\]|\\.|'')*')
      | (?P<word>[A-Za-z0-9_$]+)
      | (?P<punct>[,().*@])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_ROUTINES = ("FUNCTION", "PROCEDURE", "PACKAGE")
_LIMITS = frozenset(
    {"MAX_QUERIES_PER_HOUR", "MAX_UPDATES_PER_HOUR", "MAX_CONNECTIONS_PER_HOUR", "MAX_USER_CONNECTIONS"}
    | {"MAX_STATEMENT_TIME"}
)
_SUMMARY_CHARS = 160


class Level(StrEnum):
    """Where a privilege applies."""

    GLOBAL = "global"
    DATABASE = "database"
    TABLE = "table"
    COLUMN = "column"
    ROUTINE = "routine"
    PROXY = "proxy"
    ROLE = "role"
    UNPARSED = "unparsed"


@dataclass(frozen=True, order=True, slots=True)
class Privilege:
    """One right an account holds (or should hold), at one level.

    ``name`` is the privilege in upper case (``SELECT``, ``GRANT OPTION``,
    ``ALL PRIVILEGES``); for ``ROLE`` the role, for ``PROXY`` the proxied
    account, for ``UNPARSED`` a literal-free summary of the line. ``db`` of a
    ``DATABASE`` item is MariaDB's pattern text (see the module docstring);
    ``routine`` is ``FUNCTION``/``PROCEDURE``/``PACKAGE [BODY]``.
    """

    level: Level
    name: str
    db: str = ""
    table: str = ""
    column: str = ""
    routine: str = ""

    def on(self) -> str:
        """The object as SQL: ``*.*``, a database's ``db.*``, a table's ``db.t``, ``FUNCTION db.f`` (names quoted)."""
        if self.level is Level.GLOBAL:
            return "*.*"
        if self.level is Level.DATABASE:
            return f"{quote(self.db)}.*"
        if self.level is Level.ROUTINE:
            return f"{self.routine} {quote(self.db)}.{quote(self.table)}"
        return f"{quote(self.db)}.{quote(self.table)}"

    def sql(self) -> str:
        """How the item reads in a GRANT or REVOKE: ``SELECT (c) ON db.t``, ``ROLE r`` (names quoted)."""
        if self.level is Level.ROLE:
            return f"ROLE {quote(self.name)}"
        if self.level is Level.PROXY:
            return f"PROXY ON {self.name}"
        if self.level is Level.UNPARSED:
            return f"unparsed grant: {self.name}"
        if self.level is Level.COLUMN:
            return f"{self.name} ({quote(self.column)}) ON {self.on()}"
        return f"{self.name} ON {self.on()}"


@dataclass(frozen=True, slots=True)
class GrantLine:
    """One parsed line: its grantee (``user@host``, ``PUBLIC`` or a role name) and its items."""

    grantee: str
    privileges: tuple[Privilege, ...]

    @property
    def role_grantee(self) -> bool:
        """Whether the line lists a role's own rights (no ``@host``, not ``PUBLIC``)."""
        return bool(self.grantee) and "@" not in self.grantee and self.grantee != "PUBLIC"


class _Unparsable(Exception):
    """The line is not a form this parser knows."""


def quote(identifier: str) -> str:
    """Backtick-quote an identifier (a backtick inside is doubled)."""
    return "`" + identifier.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """A single-quoted SQL string literal (quotes doubled, backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def parse_line(line: str) -> GrantLine:
    """Parse one ``SHOW GRANTS`` line; never raises (unknown forms become one ``UNPARSED`` item)."""
    try:
        return _Parser(_tokens(line)).line()
    except _Unparsable:
        return GrantLine("", (Privilege(Level.UNPARSED, _summary(line)),))


def parse_grants(lines: list[str]) -> tuple[GrantLine, ...]:
    """Parse every line of one ``SHOW GRANTS`` answer."""
    return tuple(parse_line(line) for line in lines)


def _summary(line: str) -> str:
    # Up to the first quote: what follows may be a password hash or a certificate subject.
    head = line.split("'", 1)[0].strip()
    return head[:_SUMMARY_CHARS] + ("..." if len(head) > _SUMMARY_CHARS or "'" in line else "")


def _tokens(line: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(line.rstrip())
    while pos < end:
        match = _TOKEN.match(line, pos)
        if match is None or match.end() == pos:
            raise _Unparsable(line)
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote(kind: str, text: str) -> str:
    if kind == "ident":
        return text[1:-1].replace("``", "`")
    body = text[1:-1].replace("''", "'")
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.DOTALL)


class _Parser:
    """A recursive-descent parser over one line's tokens."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._tokens = tokens
        self._pos = 0

    def _peek(self, offset: int = 0) -> tuple[str, str]:
        index = self._pos + offset
        return self._tokens[index] if index < len(self._tokens) else ("end", "")

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "end":
            raise _Unparsable("unexpected end")
        self._pos += 1
        return token

    def _at_word(self, *words: str) -> bool:
        kind, text = self._peek()
        return kind == "word" and text.upper() in words

    def _expect(self, kind: str, text: str | None = None) -> str:
        got_kind, got = self._next()
        if got_kind != kind or (text is not None and got.upper() != text):
            raise _Unparsable(f"expected {text or kind}, got {got!r}")
        return got

    def line(self) -> GrantLine:
        if self._at_word("SET"):
            return self._default_role()
        self._expect("word", "GRANT")
        if self._peek()[0] in {"ident", "string"} and self._peek(1)[0] == "word" and self._peek(1)[1].upper() == "TO":
            return self._role_grant()
        if self._at_word("PROXY") and self._peek(1)[1].upper() == "ON":
            return self._proxy_grant()
        return self._privilege_grant()

    def _default_role(self) -> GrantLine:
        # SET DEFAULT ROLE r FOR u@h: which granted role is active at login; the grant line counts.
        for word in ("SET", "DEFAULT", "ROLE"):
            self._expect("word", word)
        self._name()
        self._expect("word", "FOR")
        grantee = self._grantee()
        self._end()
        return GrantLine(grantee, ())

    def _role_grant(self) -> GrantLine:
        role = self._name()
        self._expect("word", "TO")
        grantee = self._grantee()
        self._tail()
        return GrantLine(grantee, (Privilege(Level.ROLE, role),))

    def _proxy_grant(self) -> GrantLine:
        self._expect("word", "PROXY")
        self._expect("word", "ON")
        proxied = self._account()
        self._expect("word", "TO")
        grantee = self._grantee()
        items = [Privilege(Level.PROXY, proxied)]
        if self._tail():
            items.append(Privilege(Level.PROXY, f"{proxied} WITH GRANT OPTION"))
        return GrantLine(grantee, tuple(items))

    def _privilege_grant(self) -> GrantLine:
        named: list[tuple[str, tuple[str, ...]]] = []
        while True:
            named.append(self._privilege())
            if self._peek() != ("punct", ","):
                break
            self._next()
        self._expect("word", "ON")
        level, db, table, routine = self._object()
        self._expect("word", "TO")
        grantee = self._grantee()
        grant_option = self._tail()
        items: list[Privilege] = []
        for name, columns in named:
            if columns:
                if level is not Level.TABLE:
                    raise _Unparsable("column privileges on a non-table object")
                items.extend(Privilege(Level.COLUMN, name, db, table, column) for column in columns)
            else:
                items.append(Privilege(level, name, db, table, routine=routine))
        if grant_option:
            items.append(Privilege(level, "GRANT OPTION", db, table, routine=routine))
        return GrantLine(grantee, tuple(items))

    def _privilege(self) -> tuple[str, tuple[str, ...]]:
        words: list[str] = []
        while self._peek()[0] == "word" and not (words and self._at_word("ON")):
            words.append(self._next()[1].upper())
        if not words:
            raise _Unparsable("expected a privilege")
        name = " ".join(words)
        name = "ALL PRIVILEGES" if name == "ALL" else name
        columns: list[str] = []
        if self._peek() == ("punct", "("):
            self._next()
            while True:
                columns.append(self._name(allow_word=True))
                if self._peek() != ("punct", ","):
                    break
                self._next()
            self._expect("punct", ")")
        return name, tuple(columns)

    def _object(self) -> tuple[Level, str, str, str]:
        routine = ""
        if self._at_word(*_ROUTINES):
            routine = self._next()[1].upper()
            if routine == "PACKAGE" and self._at_word("BODY"):
                routine += " " + self._next()[1].upper()
        db = self._part()
        self._expect("punct", ".")
        table = self._part()
        if routine:
            if db is None or table is None:
                raise _Unparsable("a routine grant names one routine")
            return Level.ROUTINE, db, table, routine
        if db is None and table is None:
            return Level.GLOBAL, "", "", ""
        if db is None:
            raise _Unparsable("*.name is not an object")
        if table is None:
            return Level.DATABASE, db, "", ""
        return Level.TABLE, db, table, ""

    def _part(self) -> str | None:
        if self._peek() == ("punct", "*"):
            self._next()
            return None
        return self._name(allow_word=True)

    def _name(self, *, allow_word: bool = False) -> str:
        kind, text = self._next()
        if kind in {"ident", "string"}:
            return _unquote(kind, text)
        if kind == "word" and allow_word:
            return text
        raise _Unparsable(f"expected a name, got {text!r}")

    def _account(self) -> str:
        user = self._name(allow_word=True)
        self._expect("punct", "@")
        host = self._name(allow_word=True)
        return f"{quote_string(user)}@{quote_string(host)}"

    def _grantee(self) -> str:
        if self._at_word("PUBLIC"):
            self._next()
            return "PUBLIC"
        user = self._name(allow_word=True)
        if self._peek() != ("punct", "@"):
            return user  # a role
        self._next()
        return f"{user}@{self._name(allow_word=True)}"

    def _tail(self) -> bool:
        """Skip account options after the grantee; return whether ``WITH GRANT OPTION`` is among them."""
        grant_option = False
        while self._peek()[0] != "end":
            if self._at_word("IDENTIFIED", "REQUIRE"):
                self._next()
                # Authentication plugins and TLS requirements: words, strings and parentheses.
                while self._peek()[0] != "end" and not self._at_word("WITH", "REQUIRE", "IDENTIFIED"):
                    self._next()
                continue
            self._expect("word", "WITH")
            while self._peek()[0] != "end" and not self._at_word("IDENTIFIED", "REQUIRE"):
                if self._at_word("GRANT", "ADMIN"):
                    grant_option = True
                    self._next()
                    self._expect("word", "OPTION")
                elif self._at_word(*_LIMITS):
                    self._next()
                    self._expect("word")
                else:
                    raise _Unparsable("unknown WITH option")
        return grant_option

    def _end(self) -> None:
        if self._peek()[0] != "end":
            raise _Unparsable("trailing tokens")

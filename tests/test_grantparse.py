"""The SHOW GRANTS parser (``gateway.db.grants``): every form MariaDB prints, and failing closed on the rest."""

from __future__ import annotations

import pytest
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.db.grants import GrantLine, Level, Privilege, parse_grants, parse_line, quote

HASH = "*D821809F681A40A6E379B50D0463EFAE20BDD122"


def _items(line: str) -> list[Privilege]:
    return list(parse_line(line).privileges)


@pytest.mark.parametrize(
    ("line", "grantee", "expected"),
    [
        (
            f"GRANT PROCESS, FILE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '{HASH}' WITH MAX_QUERIES_PER_HOUR 10",
            "u@%",
            [Privilege(Level.GLOBAL, "PROCESS"), Privilege(Level.GLOBAL, "FILE")],
        ),
        ("GRANT USAGE ON *.* TO `u`@`%`", "u@%", [Privilege(Level.GLOBAL, "USAGE")]),
        (
            "GRANT SELECT, INSERT ON `shop\\_x`.* TO `u`@`%` WITH GRANT OPTION",
            "u@%",
            [
                Privilege(Level.DATABASE, "SELECT", "shop\\_x"),
                Privilege(Level.DATABASE, "INSERT", "shop\\_x"),
                Privilege(Level.DATABASE, "GRANT OPTION", "shop\\_x"),
            ],
        ),
        (
            "GRANT SELECT, SELECT (`a`, `b``c`), INSERT (`a`), UPDATE ON `shop`.`t1` TO `u`@`%`",
            "u@%",
            [
                Privilege(Level.TABLE, "SELECT", "shop", "t1"),
                Privilege(Level.COLUMN, "SELECT", "shop", "t1", "a"),
                Privilege(Level.COLUMN, "SELECT", "shop", "t1", "b`c"),
                Privilege(Level.COLUMN, "INSERT", "shop", "t1", "a"),
                Privilege(Level.TABLE, "UPDATE", "shop", "t1"),
            ],
        ),
        (
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE VIEW ON `d`.`v` TO `u`@`%`",
            "u@%",
            [
                Privilege(Level.TABLE, name, "d", "v")
                for name in ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER", "CREATE VIEW")
            ],
        ),
        (
            "GRANT EXECUTE ON FUNCTION `shop`.`f` TO `u`@`%`",
            "u@%",
            [Privilege(Level.ROUTINE, "EXECUTE", "shop", "f", routine="FUNCTION")],
        ),
        (
            "GRANT EXECUTE ON PACKAGE BODY `shop`.`p` TO `u`@`%`",
            "u@%",
            [Privilege(Level.ROUTINE, "EXECUTE", "shop", "p", routine="PACKAGE BODY")],
        ),
        (
            "GRANT PROXY ON ''@'%' TO `root`@`localhost` WITH GRANT OPTION",
            "root@localhost",
            [Privilege(Level.PROXY, "''@'%'"), Privilege(Level.PROXY, "''@'%' WITH GRANT OPTION")],
        ),
        ("GRANT `r``x` TO `u`@`%` WITH ADMIN OPTION", "u@%", [Privilege(Level.ROLE, "r`x")]),
        ("GRANT SELECT ON `shop`.* TO PUBLIC", "PUBLIC", [Privilege(Level.DATABASE, "SELECT", "shop")]),
        ("GRANT USAGE ON *.* TO `a_role`", "a_role", [Privilege(Level.GLOBAL, "USAGE")]),
        ("SET DEFAULT ROLE `r` FOR `u`@`%`", "u@%", []),
        (
            (
                "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA unix_socket OR "
                "mysql_native_password USING 'invalid' REQUIRE SSL WITH GRANT OPTION"
            ),
            "root@localhost",
            [Privilege(Level.GLOBAL, "ALL PRIVILEGES"), Privilege(Level.GLOBAL, "GRANT OPTION")],
        ),
        ("GRANT ALL ON `we'ird db`.* TO `u`@`h`", "u@h", [Privilege(Level.DATABASE, "ALL PRIVILEGES", "we'ird db")]),
    ],
)
def test_every_show_grants_form_becomes_typed_items(line: str, grantee: str, expected: list[Privilege]) -> None:
    """Global, database, table, column, routine, proxy, role and PUBLIC lines parse into one item per right."""
    parsed = parse_line(line)
    assert parsed.grantee == grantee
    assert list(parsed.privileges) == expected


@pytest.mark.parametrize(
    "line",
    [
        "REVOKE ALL ON *.* FROM `u`@`%`",
        'GRANT SELECT ON "shop".* TO `u`@`%`',  # ANSI quotes: not the sql_mode the gateway pins
        "GRANT SELECT ON `shop`.`t` TO `u`@`%` WITH FROBNICATE 'secret'",
        "GRANT SELECT ON `shop`.`t` TO `u`@`%` trailing",
        "GRANT SELECT ON `shop.* TO `u`@`%`",  # an unterminated quote
        "GRANT SELECT ON * TO `u`@`%`",  # "the current database": SHOW GRANTS never prints it
        "GRANT SELECT ON *.`t` TO `u`@`%`",
        "GRANT SELECT (`c`) ON `shop`.* TO `u`@`%`",  # column rights on a whole database
        "GRANT ON `shop`.* TO `u`@`%`",
        "",
        f"GRANT SELECT ON `a`.`b` TO `u`@`%` IDENTIFIED BY PASSWORD '{HASH}' WITH MAX_ROWS 1",
    ],
)
def test_unparsable_lines_fail_closed_without_their_literals(line: str) -> None:
    """A line the parser does not fully know is one UNPARSED item, and its summary drops every string literal."""
    (item,) = _items(line)
    assert item.level is Level.UNPARSED
    assert HASH not in item.name
    assert "secret" not in item.name


def test_role_grantee_lines_are_told_apart() -> None:
    """A role's own lines (no host, not PUBLIC) are marked, an account's and PUBLIC's are not."""
    lines = parse_grants(["GRANT USAGE ON *.* TO `r`", "GRANT USAGE ON *.* TO `u`@`%`", "GRANT USAGE ON *.* TO PUBLIC"])
    assert [line.role_grantee for line in lines] == [True, False, False]
    assert GrantLine("", ()).role_grantee is False  # an unparsed line is never skipped as a role's


NAMES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=12)
PRIVILEGES = st.sampled_from(["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE VIEW", "LOCK TABLES", "SHOW VIEW"])


@st.composite
def privileges(draw: st.DrawFn) -> Privilege:
    """A privilege at a level MariaDB prints with plain GRANT syntax, with arbitrary names."""
    level = draw(st.sampled_from([Level.GLOBAL, Level.DATABASE, Level.TABLE, Level.COLUMN]))
    name = draw(PRIVILEGES)
    if level is Level.GLOBAL:
        return Privilege(level, name)
    if level is Level.DATABASE:
        return Privilege(level, name, draw(NAMES))
    column = draw(NAMES) if level is Level.COLUMN else ""
    return Privilege(level, name, draw(NAMES), draw(NAMES), column)


@pytest.mark.fuzz
@settings(max_examples=budget(300))
@given(privileges(), NAMES, NAMES)
def test_rendered_grants_parse_back_to_the_same_item(item: Privilege, user: str, host: str) -> None:
    """Whatever the names (backticks, quotes, spaces, any script), GRANT <item> TO user@host parses back to item."""
    line = f"GRANT {item.sql()} TO {quote(user)}@{quote(host)}"
    parsed = parse_line(line)
    assert parsed.privileges == (item,)
    assert parsed.grantee == f"{user}@{host}"


@pytest.mark.fuzz
@settings(max_examples=budget(300))
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_closed(text: str) -> None:
    """No input makes the parser raise; what it returns is typed items or exactly one UNPARSED item."""
    parsed = parse_line(text)
    unparsed = [p for p in parsed.privileges if p.level is Level.UNPARSED]
    assert not unparsed or len(parsed.privileges) == 1

"""Create a database with least-privilege accounts: for the demo and the tests.

Three accounts per database, each with only what its access level needs:
``reader`` (SELECT), ``writer`` (SELECT, INSERT, UPDATE, DELETE) and ``ddl``
(those plus CREATE, ALTER, DROP, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW).
None has FILE, PROCESS, SUPER or CREATE ROUTINE (SECURITY rule 15), and
passwords are random, handed back to the caller, never fixed in a file here.
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

ACCOUNT_PRIVILEGES = {
    "reader": "SELECT",
    "writer": "SELECT, INSERT, UPDATE, DELETE",
    "ddl": "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW",
}
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")

DEMO_SCHEMA = [
    """CREATE TABLE customers (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(100) NOT NULL,
        email VARCHAR(200) NOT NULL,
        created_at DATETIME(6) NOT NULL
    )""",
    """CREATE TABLE items (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(100) NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        sku BINARY(4) NULL,
        added DATE NULL
    )""",
    """CREATE TABLE orders (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        item_id INT NOT NULL,
        quantity INT NOT NULL,
        ordered_at DATETIME NOT NULL,
        note VARCHAR(200) NULL
    )""",
    """CREATE TABLE payment_cards (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        card_number VARCHAR(32) NOT NULL
    )""",
]


@dataclass(frozen=True)
class Account:
    """A database account made for one access level."""

    user: str
    password: str
    privileges: str


def _check(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"unsafe identifier {name!r}")
    return name


async def provision(root: Any, database: str, prefix: str, *, demo_data: bool = True) -> dict[str, Account]:  # noqa: ANN401
    """(Re)create ``database`` and its three accounts ``{prefix}_reader`` etc. with ``root``."""
    db = _check(database)
    with warnings.catch_warnings():
        # "DROP ... IF EXISTS" of something absent is a note from MariaDB, not a problem.
        warnings.simplefilter("ignore")
        return await _provision(root, db, prefix, demo_data=demo_data)


async def _provision(root: Any, db: str, prefix: str, *, demo_data: bool) -> dict[str, Account]:  # noqa: ANN401
    async with root.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        await cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        accounts: dict[str, Account] = {}
        for level, privileges in ACCOUNT_PRIVILEGES.items():
            user = _check(f"{prefix}_{level}")
            password = secrets.token_urlsafe(24)
            await cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            await cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
            await cur.execute(f"GRANT {privileges} ON `{db}`.* TO '{user}'@'%'")
            accounts[level] = Account(user, password, privileges)
        if demo_data:
            await _seed(cur, db)
    return accounts


async def _seed(cur: Any, db: str) -> None:  # noqa: ANN401
    for ddl in DEMO_SCHEMA:
        await cur.execute(ddl.replace("CREATE TABLE ", f"CREATE TABLE `{db}`.", 1))
    await cur.executemany(
        f"INSERT INTO `{db}`.customers (name, email, created_at) VALUES (%s, %s, %s)",  # noqa: S608 - checked identifier
        [
            ("Ada Lovelace", "ada@example.com", "2024-01-02 03:04:05.123456"),
            ("Grace Hopper", "grace@example.com", "2024-02-03 04:05:06"),
            ("Alan Turing", "alan@example.com", "2024-03-04 05:06:07"),
        ],
    )
    items = [
        (f"item {i}", f"{i * 1.25 + 0.99:.2f}", i.to_bytes(4, "big"), f"2024-01-{i % 28 + 1:02d}")
        for i in range(1, 1001)
    ]
    items[0] = ("pen", "1.50", b"\x00\xff\x10\x80", "2024-01-01")
    await cur.executemany(
        f"INSERT INTO `{db}`.items (name, price, sku, added) VALUES (%s, %s, %s, %s)",  # noqa: S608 - checked identifier
        items,
    )
    await cur.executemany(
        f"INSERT INTO `{db}`.orders (customer_id, item_id, quantity, ordered_at, note) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
        [
            (1, 1, 2, "2024-04-01 10:00:00", None),
            (2, 3, 1, "2024-04-02 11:30:00", "gift"),
            (3, 2, 5, "2024-04-03 12:45:00", None),
        ],
    )
    await cur.executemany(
        f"INSERT INTO `{db}`.payment_cards (customer_id, card_number) VALUES (%s, %s)",  # noqa: S608 - checked identifier
        [(1, "4111111111111111"), (2, "5500000000000004")],
    )


async def drop(root: Any, database: str, prefix: str) -> None:  # noqa: ANN401
    """Drop ``database`` and its accounts (for test clean-up)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await _drop(root, database, prefix)


async def _drop(root: Any, database: str, prefix: str) -> None:  # noqa: ANN401
    async with root.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{_check(database)}`")
        for level in ACCOUNT_PRIVILEGES:
            await cur.execute(f"DROP USER IF EXISTS '{_check(f'{prefix}_{level}')}'@'%'")

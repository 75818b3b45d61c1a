"""The shared store's SQL for its chains and checkpoints, over one ``rows(sql, params)`` function.

Kept apart from ``gateway/audit/mariadb.py`` (connections and writes) so each
module does one thing; the queries use ``audit_log``'s unique ``(chain, seq)``
index and ``audit_checkpoints``' primary key, so every read is a range scan
of ``batch`` rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.audit import checkpoints as signed
from gateway.audit.checkpoints import Checkpoint, Signer
from gateway.audit.reading import CHECKED
from gateway.audit.schema import CHAINS_TABLE, CHECKPOINTS_TABLE, HEAD_TABLE, LEGACY_CHAIN, LOG_TABLE
from gateway.audit.store import Entry, decode_entry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.audit.query import Execute, Row

# id, the hashed record and its chain columns, the plain columns (seq first), and the chain column last.
_CHAIN_SELECT = (
    f"SELECT id, record, prev_hash, hash, {', '.join(CHECKED)}, chain FROM {LOG_TABLE} "  # noqa: S608 - fixed names
    "WHERE chain = %s AND seq > %s ORDER BY seq LIMIT %s"
)


def heads(rows: Execute) -> dict[str, tuple[int, str]]:
    """Each chain's head row; the ``_legacy`` chain's is version 1's single head row, when it has entries."""
    found = {str(c): (int(s), str(h)) for c, s, h in rows(f"SELECT chain, seq, hash FROM {CHAINS_TABLE}", ())}  # noqa: S608 - fixed names
    legacy = rows(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1 AND seq > 0", ())  # noqa: S608 - fixed names
    if legacy:
        found[LEGACY_CHAIN] = (int(legacy[0][0]), str(legacy[0][1]))
    return found


def chains_in_log(rows: Execute) -> set[str]:
    """The chains that have at least one entry (a loose scan of the (chain, seq) index)."""
    return {str(chain) for (chain,) in rows(f"SELECT DISTINCT chain FROM {LOG_TABLE}", ())}  # noqa: S608 - fixed names


def chain_rows(rows: Execute, chain: str, batch: int, after: int = 0) -> Iterator[Row]:
    """One chain's rows after seq ``after`` in seq order, ``batch`` per query (no cursor held, writers never wait)."""
    while True:
        got = rows(_CHAIN_SELECT, (chain, after, batch))
        yield from got
        if got:
            after = int(got[-1][4])
        if len(got) < batch:
            return


def entry_of(row: Row) -> Entry:
    """The entry a chain row holds, as hashed."""
    return decode_entry(row[1], row[2], row[3])


def mismatches(columns: tuple[str, ...], stored_chain: object, entry: Entry) -> tuple[str, ...]:
    """The plain columns that disagree with the record, the chain column included."""
    expected = entry.get("chain", LEGACY_CHAIN)  # records before version 2 do not name their chain
    return (*columns, "chain") if stored_chain != expected else columns


def checkpoints(rows: Execute, batch: int) -> Iterator[Checkpoint]:
    """Every checkpoint in id order, ``batch`` per query."""
    after = 0
    select = (
        f"SELECT id, time, writer, key_id, body, signature FROM {CHECKPOINTS_TABLE} "  # noqa: S608 - fixed names
        "WHERE id > %s ORDER BY id LIMIT %s"
    )
    while True:
        got = rows(select, (after, batch))
        for row in got:
            yield Checkpoint(int(row[0]), str(row[1]), str(row[2]), str(row[3]), bytes(row[4]), bytes(row[5]))
        if got:
            after = int(got[-1][0])
        if len(got) < batch:
            return


def insert_checkpoint(
    cursor: Any,  # noqa: ANN401 - a DB-API cursor
    signer: Signer,
    time: str,
    writer: str,
    chain_heads: dict[str, tuple[int, str]],
) -> Checkpoint:
    """Sign the heads and store the checkpoint (one autocommitted INSERT); return it."""
    body = signed.body(time, writer, signer.key_id, chain_heads)
    signature = signer.sign(body)
    cursor.execute(
        f"INSERT INTO {CHECKPOINTS_TABLE} (time, writer, key_id, body, signature) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608 - fixed name
        (time, writer, signer.key_id, body, signature),
    )
    return Checkpoint(int(cursor.lastrowid), time, writer, signer.key_id, body, signature)

"""The dead-letter store: what could not be committed as sent, with the reason, kept once.

A message is kept once per (edge, stream, epoch, range), or once per (topic, payload) when
it does not parse into a range: an edge resending the same bad message counts up
`repeats` and moves `last_seen`, it never fills the table. Rows not seen for the retention
period are deleted by the collector's background loop.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import psycopg

log = logging.getLogger(__name__)

# Kept of a payload too large to ingest: enough to see what sent it.
OVERSIZED_KEPT_BYTES = 64 * 1024

_KEEP = """
insert into dead_letters (topic, edge_id, stream, epoch, first_seq, last_seq, refused, reason,
    payload, fingerprint)
values (%(topic)s, %(edge_id)s, %(stream)s, %(epoch)s, %(first_seq)s, %(last_seq)s,
    %(refused)s, %(reason)s, %(payload)s, %(fingerprint)s)
on conflict (fingerprint) do update set repeats = dead_letters.repeats + 1,
    last_seen = now(), reason = excluded.reason, payload = excluded.payload,
    refused = excluded.refused
returning repeats
"""
_PRUNE = "delete from dead_letters where last_seen < now() - %s"


@dataclass(frozen=True)
class Range:
    """Where a message belongs, when it parsed that far."""

    edge_id: str
    stream: str
    epoch: str
    first_seq: int
    last_seq: int


def storable(text: str, limit: int) -> str:
    """`text` as PostgreSQL text can hold it (no NUL, no lone surrogate), at most `limit`
    characters: reasons quote what outsiders sent."""
    clean = text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _fingerprint(topic: str, payload: bytes, where: Range | None) -> bytes:
    if where is None:
        key = topic.encode("utf-8", "backslashreplace") + b"\x00" + payload
    else:
        key = "\x00".join(
            [where.edge_id, where.stream, where.epoch, str(where.first_seq), str(where.last_seq)]
        ).encode()
    return hashlib.sha256(key).digest()


async def keep(
    conn: psycopg.AsyncConnection,
    topic: str,
    payload: bytes,
    reason: str,
    edge_id: str | None,
    where: Range | None = None,
    refused: bool = False,
    max_bytes: int | None = None,
) -> int:
    """Keep one message with its reason; returns how often it has been seen. Commits on
    its own (the message's own transaction, if any, has ended)."""
    kept = payload
    if max_bytes is not None and len(payload) > max_bytes:
        kept = payload[:OVERSIZED_KEPT_BYTES]
    params = {
        "topic": storable(topic, 1000),
        "edge_id": storable(edge_id, 200) if edge_id is not None else None,
        "stream": where.stream if where else None,
        "epoch": where.epoch if where else None,
        "first_seq": where.first_seq if where else None,
        "last_seq": where.last_seq if where else None,
        "refused": refused,
        "reason": storable(reason, 10_000),
        "payload": kept,
        "fingerprint": _fingerprint(topic, payload, where),
    }
    async with conn.transaction():
        row = await (await conn.execute(_KEEP, params)).fetchone()
    repeats = int(row[0]) if row else 1
    if repeats == 1:
        log.warning("dead-lettered a message on %s: %s", params["topic"], params["reason"])
    else:
        log.info("the message on %s was dead-lettered before (%d times)", topic, repeats)
    return repeats


async def prune(conn: psycopg.AsyncConnection, retention: timedelta) -> int:
    """Delete dead letters not seen for `retention`; returns how many."""
    cur = await conn.execute(_PRUNE, (retention,))
    return max(cur.rowcount, 0)

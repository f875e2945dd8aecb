"""Binary COPY of the generated plant into the tables, as ingest would have left them."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg

from bench.genealogy.plant import (
    EXCIPIENT_GTIN,
    FERMENTER,
    FINISHED,
    INGREDIENTS,
    INTERMEDIATES,
    LINE_PREFIX,
    LOST_MESSAGE,
    OPERATORS,
    PACKAGING,
    PACKED,
    SALT_GTIN,
    START,
    TAGS,
    Plant,
    Sizes,
)


def _at(days: float) -> datetime:
    return START + timedelta(days=days)


def _edge(line: str) -> str:
    return f"edge-{line.lower()}"


def _line_kind(line: str) -> str:
    if line == FERMENTER:
        return "fermentation"
    return next(kind for kind, prefix in LINE_PREFIX.items() if line.startswith(prefix + "-"))


def _sscc(n: int) -> str:
    return f"urn:epc:id:sscc:0400000.1{n:09d}"


# Each table's COPY columns with their types: one line a reader scans.
COPY = {
    "edge_streams": "stream_id int4, edge_id text, stream text, epoch text",
    "products": "gtin text, name text, uom text",
    "lots": "lot_id int8, gtin text, lot_code text, quantity float8, uom text, origin text,"
    " batch_id text, supplier text, supplier_lot text, first_seen timestamptz",
    "batches": "batch_id text, line_id text, edge_id text, started_at timestamptz,"
    " started_by text, ended_at timestamptz, ended_by text, first_seen timestamptz",
    "lot_links": "input_lot int8, output_lot int8, batch_id text, event_id text",
    "batch_inputs": "event_id text, batch_id text, lot_id int8, uom text, quantity float8,"
    " items int4, unquantified int4",
    "batch_outputs": "event_id text, batch_id text, lot_id int8, uom text, quantity float8,"
    " items int4, unquantified int4",
    "receipts": "event_id text, position int4, lot_id int8, epc text, document text,"
    " supplier text, quantity float8, uom text, time timestamptz, location text",
    "customers": "customer_id text, name text, address text",
    "shipments": "shipment text, order_id text, customer_id text, ship_to text, carrier text",
    "shipment_lines": "event_id text, position int4, lot_id int8, epc text, shipment text,"
    " quantity float8, uom text, time timestamptz, location text",
    "lot_locations": "lot_id int8, epc text, location text, time timestamptz, event_id text",
    "qc_results": "batch_id text, lot_id int8, kind text, check_name text, value float8,"
    " unit text, passed bool, inspector text, time timestamptz",
    "tag_specs": "device text, tag text, unit text, low float8, high float8",
    "trace_events": "event_id text, event_type text, event_time timestamptz,"
    " record_time timestamptz, biz_step text, read_point text, line_id text, batch_id text,"
    " operator text, source_edge text, stream_id int4, seq int8, body jsonb",
    "stream_commits": "stream_id int4, first_seq int8, last_seq int8, records int4,"
    " inserted int4, committed_at timestamptz",
    "sequence_gaps": "stream_id int4, first_missing int8, last_missing int8,"
    " before_time timestamptz, after_time timestamptz",
    "readings": "time timestamptz, received_at timestamptz, line_id text, batch_id text,"
    " device text, tag text, value float8, unit text, quality text, stream_id int4, seq int8",
}
Rows = Iterator[tuple[Any, ...]]


@contextmanager
def copy_into(conn: psycopg.Connection, table: str) -> Iterator[psycopg.Copy]:
    pairs = [c.split() for c in COPY[table].split(",")]
    columns = ", ".join(name for name, _ in pairs)
    with (
        conn.cursor() as cur,
        cur.copy(f"copy {table} ({columns}) from stdin (format binary)") as cp,
    ):
        cp.set_types([kind for _, kind in pairs])
        yield cp


class Loader:
    """Binary COPY of the plant into the tables. Lot ids follow the time lots were made, as
    the collector would have numbered them."""

    def __init__(self, plant: Plant, sizes: Sizes, rng: random.Random) -> None:
        self.plant, self.sizes, self.rng = plant, sizes, rng
        lots = plant.lots
        self.lot_order = sorted(range(len(lots)), key=lots.time.__getitem__)
        self.ids = [0] * len(lots)
        for rank, index in enumerate(self.lot_order):
            self.ids[index] = rank + 1
        lines = sorted({b.line for b in plant.batches})
        self.readings_stream = {line: 2 * i + 1 for i, line in enumerate(lines)}
        self.events_stream = {line: 2 * i + 2 for i, line in enumerate(lines)}
        self.by_start = sorted(plant.batches, key=lambda b: b.start)
        self.counts: dict[str, int] = defaultdict(int)
        # Per stream: the last sequence number committed, and its record's time.
        self.high_water: dict[int, tuple[int, datetime]] = {}
        # (stream, first, last, time before, time after): never committed.
        self.holes: list[tuple[int, int, int, datetime | None, datetime]] = []

    def copy(self, conn: psycopg.Connection, table: str, rows: Rows) -> None:
        with copy_into(conn, table) as cp:
            for row in rows:
                cp.write_row(row)
                self.counts[table] += 1

    def genealogy(self, conn: psycopg.Connection) -> None:
        for table, rows in (
            ("edge_streams", self._streams()),
            ("products", self._products()),
            ("lots", self._lots()),
            ("batches", self._batches()),
            ("batch_inputs", self._batch_inputs()),
            ("batch_outputs", self._batch_outputs()),
            ("lot_links", self._links()),
            ("receipts", self._receipts()),
            ("customers", self._customers()),
            ("shipments", self._shipments()),
            ("shipment_lines", self._shipment_lines()),
            ("lot_locations", self._locations()),
            ("qc_results", self._qc()),
            ("tag_specs", self._tag_specs()),
        ):
            self.copy(conn, table, rows)
        commits: list[tuple[Any, ...]] = []
        self.copy(conn, "trace_events", self._events(commits))
        self.copy(conn, "stream_commits", iter(commits))

    def _streams(self) -> Rows:
        for line, stream in self.readings_stream.items():
            yield stream, _edge(line), "readings", "e1"
            yield self.events_stream[line], _edge(line), "events", "e1"

    def _products(self) -> Rows:
        for name, group, uom in (
            ("Ingredient", INGREDIENTS, "kg"),
            ("Packaging", PACKAGING, "EA"),
            ("Intermediate", INTERMEDIATES, "kg"),
            ("Bulk product", FINISHED, "kg"),
            ("Packed product", PACKED, "EA"),
        ):
            for i, gtin in enumerate(group):
                yield gtin, f"{name} {i:03d}", uom
        yield SALT_GTIN, "Salt", "kg"
        yield EXCIPIENT_GTIN, "Excipient", "kg"

    def _lots(self) -> Rows:
        lots, batches = self.plant.lots, self.plant.batches
        for i in self.lot_order:
            supplied = lots.level[i] == 0
            yield (
                self.ids[i],
                lots.gtin[i],
                lots.code[i],
                round(lots.qty[i], 3),
                lots.uom[i],
                "supplier" if supplied else "own",
                None if supplied else batches[lots.batch[i]].batch_id,
                lots.supplier[i],
                lots.code[i] if supplied else None,
                _at(lots.time[i]),
            )

    def _batches(self) -> Rows:
        for b in sorted(self.plant.batches, key=lambda b: b.end):
            first, last = _at(b.start), _at(b.end)
            ops = b.operators
            yield b.batch_id, b.line, _edge(b.line), first, ops[0], last, ops[-1], first

    def _batch_inputs(self) -> Rows:
        """What each batch consumed of each lot, its uses of one lot summed (as ingest does)."""
        ids, uom = self.ids, self.plant.lots.uom
        for b in sorted(self.plant.batches, key=lambda b: b.end):
            used: dict[int, tuple[float, int]] = {}
            for lot, q in b.inputs:
                total, n = used.get(lot, (0.0, 0))
                used[lot] = (total + q, n + 1)
            for lot, (q, n) in used.items():
                yield f"evt-{b.batch_id}", b.batch_id, ids[lot], uom[lot], round(q, 3), n, 0

    def _batch_outputs(self) -> Rows:
        lots, ids = self.plant.lots, self.ids
        for b in sorted(self.plant.batches, key=lambda b: b.end):
            for out in dict.fromkeys(b.outputs):
                q = round(lots.qty[out], 3)
                yield f"evt-{b.batch_id}", b.batch_id, ids[out], lots.uom[out], q, 1, 0

    def _links(self) -> Rows:
        ids = self.ids
        for b in sorted(self.plant.batches, key=lambda b: b.end):
            event = f"evt-{b.batch_id}"
            for lot in dict.fromkeys(lot for lot, _ in b.inputs):
                for out in dict.fromkeys(b.outputs):
                    yield ids[lot], ids[out], b.batch_id, event

    def _receipts(self) -> Rows:
        lots, ids = self.plant.lots, self.ids
        po = 0
        for b in self.by_start:
            if b.kind != "receiving":
                continue
            po += 1
            sup, q = b.inputs[0]
            event, when, dock = f"rcv-{b.batch_id}", _at(b.start), f"{b.line}-DOCK"
            doc, who = f"PO-{po:07d}", lots.supplier[sup]
            yield event, 0, ids[sup], None, doc, who, round(q, 3), lots.uom[sup], when, dock
            for k, raw in enumerate(b.outputs, 1):
                q, uom = round(lots.qty[raw], 3), lots.uom[raw]
                yield event, k, ids[raw], _sscc(ids[raw]), doc, who, q, uom, when, dock

    def _customers(self) -> Rows:
        for c in range(self.sizes.customers):
            town = f"{self.rng.randint(1, 200)} Main Street, Town {c % 500}"
            yield f"C{c:05d}", f"Customer {c:05d}", town

    def _shipments(self) -> Rows:
        carriers = ("DHL", "DB Schenker", "Kuehne+Nagel", "GEODIS", "own truck")
        for s, c in enumerate(self.plant.shipment_customer):
            customer = f"C{c:05d}"
            carrier = carriers[s % len(carriers)]
            yield f"DESADV-{s:07d}", f"SO-{s:07d}", customer, f"Warehouse of {customer}", carrier

    def _shipment_lines(self) -> Rows:
        for n, s in enumerate(self.plant.ship_lines):
            yield (
                f"ship-{s.shipment:07d}",
                s.position,
                self.ids[s.lot],
                _sscc(10**8 + n),
                f"DESADV-{s.shipment:07d}",
                s.qty,
                "EA",
                _at(s.time),
                f"DOCK-{s.shipment % 8 + 1}",
            )

    def _locations(self) -> Rows:
        ids, levels = self.ids, self.plant.lots.level
        store = {2: "WIP", 3: "WH-BULK", 4: "WH-FG"}
        for b in self.by_start:
            if b.kind == "receiving":
                event = f"rcv-{b.batch_id}"
                yield ids[b.inputs[0][0]], None, f"{b.line}-DOCK", _at(b.start), event
                for raw in b.outputs:
                    bin_ = f"WH-RAW-{ids[raw] % 40:02d}"
                    yield ids[raw], _sscc(ids[raw]), bin_, _at(b.end), event
                continue
            for lot in b.outputs:
                level = levels[lot]
                where = f"WIP-{b.line}" if level == 2 else f"{store[level]}-{ids[lot] % 40:02d}"
                yield ids[lot], None, where, _at(b.end), f"evt-{b.batch_id}"
        for n, s in enumerate(self.plant.ship_lines):
            dock, event = f"DOCK-{s.shipment % 8 + 1}", f"ship-{s.shipment:07d}"
            yield self.ids[s.lot], _sscc(10**8 + n), dock, _at(s.time), event

    def _qc(self) -> Rows:
        rng = self.rng
        checks = {  # batch kind: (QC kind, check, unit, share of batches checked)
            "receiving": ("incoming", "identity", None, 0.2),
            "mixing": ("IPQC", "viscosity", "mPa.s", 0.1),
            "finishing": ("FQC", "net_weight", "g", 0.3),
        }
        for b in self.by_start:
            check = checks.get(b.kind)
            if check is None or rng.random() >= check[3]:
                continue
            kind, name, unit, _ = check
            incoming = kind == "incoming"
            lot = self.ids[b.inputs[0][0] if incoming else b.outputs[0]]
            value, passed, who = rng.uniform(90, 110), rng.random() > 0.02, rng.choice(OPERATORS)
            batch = None if incoming else b.batch_id
            yield batch, lot, kind, name, value, unit, passed, who, _at(b.end)

    def _tag_specs(self) -> Rows:
        for line in self.readings_stream:
            for dev, tag, unit, lo, hi in TAGS[_line_kind(line)]:
                yield f"{line}-{dev}", tag, unit, lo, hi

    def _events(self, commits: list[tuple[Any, ...]]) -> Rows:
        """A TransformationEvent per batch (traces read operators and flags from it), on its
        edge's events stream, and the commit records of the batch's two event messages."""
        lots = self.plant.lots
        seq: dict[str, int] = defaultdict(int)
        lag = timedelta(seconds=2)

        def item(lot: int, q: float) -> dict[str, Any]:
            return {"gtin": lots.gtin[lot], "lot": lots.code[lot], "quantity": round(q, 3)}

        for b in self.by_start:
            stream, s = self.events_stream[b.line], seq[b.line]
            seq[b.line] = s + 3  # batch_started; then batch_ended and this event
            start, end = _at(b.start), _at(b.end)
            self.high_water[stream] = (s + 2, end)
            commits.append((stream, s, s, 1, 1, start + lag))
            commits.append((stream, s + 1, s + 2, 2, 2, end + lag))
            body = {
                "kind": "transformation_event",
                "seq": s + 2,
                "time": end.isoformat(),
                "event_id": f"evt-{b.batch_id}",
                "transformation_id": b.batch_id,
                "read_point": b.line,
                "line": b.line,
                "batch": b.batch_id,
                "inputs": [item(lot, q) for lot, q in b.inputs],
                "outputs": [item(lot, lots.qty[lot]) for lot in b.outputs],
                "operators": b.operators,
                "started_at": start.isoformat(),
            }
            yield (
                f"evt-{b.batch_id}",
                "TransformationEvent",
                end,
                end + lag,
                "commissioning",
                b.line,
                b.line,
                b.batch_id,
                ", ".join(b.operators),
                _edge(b.line),
                stream,
                s + 2,
                body,
            )

    def readings(self, conn: psycopg.Connection, commits_conn: psycopg.Connection) -> None:
        """Readings batch by batch in time order, one message per poll of the line's devices
        (as the edge publishes them), each with the collector's commit record."""
        rng = self.rng
        seq: dict[str, int] = defaultdict(int)
        lag = timedelta(seconds=2)
        n = 0
        with copy_into(conn, "readings") as out, copy_into(commits_conn, "stream_commits") as log:
            for b in self.by_start:
                tags = [
                    (f"{b.line}-{d}", t, u, lo, hi) for d, t, u, lo, hi in TAGS[_line_kind(b.line)]
                ]
                polls = math.ceil(b.readings / len(tags))
                step = (b.end - b.start) * 86_400 / polls
                base, stream, left = _at(b.start), self.readings_stream[b.line], b.readings
                for k in range(polls):
                    now = base + timedelta(seconds=k * step)
                    first, width = seq[b.line], min(len(tags), left)
                    seq[b.line] += width
                    left -= width
                    if rng.random() < LOST_MESSAGE:
                        continue  # the message never reached the collector: a hole
                    high, before = self.high_water.get(stream, (-1, None))
                    if first > high + 1:  # as ingest keeps them: a gap below what arrived
                        self.holes.append((stream, high + 1, first - 1, before, now))
                    self.high_water[stream] = (first + width - 1, now)
                    for j, (device, tag, unit, lo, hi) in enumerate(tags[:width]):
                        r = rng.random()
                        value: float | None = lo + (hi - lo) * (0.15 + 0.7 * r)
                        quality = "good"
                        if r < 0.001:
                            value, quality = None, "bad"
                        elif r < 0.004:
                            quality = "uncertain"
                        elif r > 0.998:
                            value = hi + (hi - lo) * (r - 0.998) * 50  # out of spec
                        row = (now, now + lag, b.line, b.batch_id, device, tag, value, unit)
                        out.write_row((*row, quality, stream, first + j))
                    n += width
                    log.write_row((stream, first, first + width - 1, width, width, now + lag))
        self.counts["readings"] += n

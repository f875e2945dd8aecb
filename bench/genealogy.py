"""Genealogy benchmark (issue 5): trace, recall and batch-parameter latencies on a plant-sized
lot genealogy, each set against the bare graph walk (`trace.count_reachable`) over the same
lots.

    make bench-genealogy
    (or: eval "$(bash deploy/services.sh up)"; .venv/bin/python bench/genealogy.py --scale 0.05)

It drops and recreates its own database, `trace_bench`, on the project's cluster, migrates
it, and fills it with binary COPY (not through the event pipeline). At --scale 1:

    supplier lots --receiving--> raw lots --mixing--> intermediates --finishing--> finished
        --packing--> shipped lots --> shipments --> customers
    20,000            80,000          200,000         250,000          450,000  = 1,000,000 lots

Each batch consumes several input lots, oldest first, and makes one to three output lots; a
raw lot feeds about seven mixing batches. Two ingredients are in everything: every mixing
batch takes salt from the silo fill of the day (90 fills a year, from two supplier lots) and
every finishing batch takes the excipient drum of the day (200 drums, four supplier lots).
So one salt supplier lot reaches about half the plant (~500,000 lots) and one silo fill about
10,000. Readings (10,000,000; one fermentation batch holds 1,000,000 of them) go to every
batch, with the edges' sequence numbers and commit records, a few lost messages, bad and
uncertain readings, and excursions outside the tags' spec limits. Everything shrinks with
--scale except the calendar (one year: the hypertable has a chunk per day at any scale).

Each answer runs in a worker process over one autocommit connection, as the API's pool gives
one; a run that overruns --timeout is stopped and reported as such. The output ends with a
markdown table for the README, where the time goes (SQL, row loading, Python; statements per
answer) and EXPLAIN ANALYZE of the statements that cost most.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import multiprocessing
import os
import queue
import random
import statistics
import subprocess
import sys
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self

import psycopg
from psycopg import AsyncConnection, AsyncCursor, AsyncServerCursor
from psycopg.conninfo import make_conninfo
from psycopg.rows import Row

from cloud_collector import genealogy, queries, rollups, trace
from cloud_collector.migrate import migrate
from protocols.gs1 import check_digit as gs1_check_digit

BENCH_DB = "trace_bench"
ROLLUP_TABLES = ["batch_tag_stats", "batch_tag_minutes", "batch_tag_percentiles"]
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365.0

# -- the plant -------------------------------------------------------------------------------

# Lines of each kind: how many, and how long a batch runs (hours).
LINES: dict[str, tuple[int, tuple[float, float]]] = {
    "receiving": (4, (0.25, 0.5)),
    "mixing": (40, (1.5, 3.0)),
    "finishing": (40, (1.0, 2.5)),
    "packing": (60, (0.5, 1.5)),
}
LINE_PREFIX = {"receiving": "RCV", "mixing": "MIX", "finishing": "FIN", "packing": "PK"}
FERMENTER = "FERM-1"  # runs the one batch with a million readings (72 h, 20 tags)
FERMENTATION_DAYS = 3.0

# What each kind of line measures: (device suffix, tag, unit, spec low, spec high).
TAGS: dict[str, tuple[tuple[str, str, str, float, float], ...]] = {
    "receiving": (("scale", "weight", "kg", 0.0, 30_000.0), ("probe", "temp", "Cel", 2.0, 25.0)),
    "mixing": (
        ("mixer", "temp", "Cel", 20.0, 80.0),
        ("mixer", "speed", "rpm", 50.0, 150.0),
        ("mixer", "torque", "N.m", 50.0, 400.0),
        ("mixer", "moisture", "%", 10.0, 14.0),
        ("mixer", "pressure", "bar", 0.8, 1.2),
    ),
    "finishing": (
        ("oven", "temp", "Cel", 180.0, 230.0),
        ("oven", "humidity", "%", 20.0, 60.0),
        ("oven", "belt_speed", "m/min", 1.0, 3.0),
        ("scale", "weight", "g", 495.0, 515.0),
    ),
    "packing": (
        ("checkweigher", "weight", "g", 500.0, 520.0),
        ("sealer", "seal_temp", "Cel", 140.0, 170.0),
    ),
    "fermentation": tuple(
        ("fermenter", tag, unit, lo, hi)
        for tag, unit, lo, hi in (
            ("temp", "Cel", 30.0, 38.0),
            ("ph", "pH", 5.5, 7.5),
            ("dissolved_o2", "%", 20.0, 60.0),
            ("pressure", "bar", 0.9, 1.6),
            ("level", "%", 40.0, 90.0),
            ("agitator_speed", "rpm", 100.0, 400.0),
            ("air_flow", "L/min", 50.0, 500.0),
            ("co2_out", "%", 0.0, 8.0),
            ("o2_out", "%", 12.0, 21.0),
            ("foam", "%", 0.0, 30.0),
            ("jacket_temp", "Cel", 10.0, 40.0),
            ("feed_rate", "L/h", 0.0, 50.0),
            ("base_flow", "L/h", 0.0, 10.0),
            ("acid_flow", "L/h", 0.0, 10.0),
            ("weight", "kg", 5_000.0, 9_000.0),
            ("turbidity", "NTU", 0.0, 400.0),
            ("redox", "mV", -200.0, 200.0),
            ("conductivity", "mS/cm", 5.0, 25.0),
            ("glucose", "g/L", 0.0, 40.0),
            ("biomass", "g/L", 0.0, 60.0),
        )
    ),
}
# Readings per batch relative to each other (the fermentation batch has its own budget).
READING_WEIGHT = {"receiving": 2, "mixing": 40, "finishing": 30, "packing": 6}
LOST_MESSAGE = 1 / 20_000  # an edge message that never arrived: a hole in the sequence

# The ingredients in everything: silo fills of salt and drums of excipient, a fixed number a
# year at any scale, so that their reach keeps its share of the plant.
SALT_FILLS, SALT_SUPPLIER_LOTS, SALT_FIRST_LOT_FILLS = 90, 2, 50
EXCIPIENT_DRUMS, EXCIPIENT_SUPPLIER_LOTS = 200, 4
SALT_SHARE, EXCIPIENT_SHARE = 0.015, 0.02  # of the batch's mass

TARGETS = {
    "backward": ("p95 < 20 ms", 20.0),
    "forward": ("p95 < 20 ms", 20.0),
    "recall-10k": ("< 150 ms", 150.0),
    "recall-500k": ("< 3 s (streamed)", 3000.0),
    "parameters": ("< 200 ms", 200.0),
}
MAX_WALK_RATIO = 2.0


def _gtin(item: int) -> str:
    body = f"0400000{item:06d}"
    return body + gs1_check_digit(body)


SALT_GTIN, EXCIPIENT_GTIN = _gtin(1), _gtin(2)
INGREDIENTS = [_gtin(100 + i) for i in range(60)]
PACKAGING = [_gtin(200 + i) for i in range(20)]
INTERMEDIATES = [_gtin(300 + i) for i in range(30)]
FINISHED = [_gtin(400 + i) for i in range(60)]
PACKED = [_gtin(500 + i) for i in range(120)]
SUPPLIERS = [f"Supplier {i:02d}" for i in range(40)]
OPERATORS = [f"op{i:03d}" for i in range(300)]


@dataclass(frozen=True)
class Sizes:
    supplier_lots: int
    raw_lots: int
    intermediates: int
    finished: int
    shipped: int
    readings: int
    fermentation_readings: int
    customers: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        def n(x: float, least: int) -> int:
            return max(least, round(x * scale))

        return cls(
            supplier_lots=n(20_000, 60),
            raw_lots=n(80_000, 600),
            intermediates=n(200_000, 400),
            finished=n(250_000, 500),
            shipped=n(450_000, 900),
            readings=n(10_000_000, 20_000),
            fermentation_readings=n(1_000_000, 2_000),
            customers=n(2_000, 20),
        )

    @property
    def lots(self) -> int:
        return (
            self.supplier_lots + self.raw_lots + self.intermediates + self.finished + self.shipped
        )


# -- the genealogy, built in memory ----------------------------------------------------------


@dataclass(slots=True)
class Batch:
    batch_id: str
    kind: str
    line: str
    start: float  # days after START
    end: float
    operators: list[str]
    inputs: list[tuple[int, float]]  # (lot index, quantity consumed)
    outputs: list[int] = field(default_factory=list)
    readings: int = 0


class Lots:
    """Parallel columns, indexed by the order lots were made in; ids come later (by time)."""

    def __init__(self) -> None:
        self.level: list[int] = []
        self.time: list[float] = []
        self.gtin: list[str] = []
        self.code: list[str] = []
        self.qty: list[float] = []
        self.uom: list[str] = []
        self.batch: list[int] = []  # the batch that made it; -1 for supplier lots
        self.supplier: list[str | None] = []

    def add(
        self,
        level: int,
        t: float,
        gtin: str,
        qty: float,
        uom: str,
        batch: int,
        supplier: str | None,
    ) -> int:
        index = len(self.time)
        self.level.append(level)
        self.time.append(t)
        self.gtin.append(gtin)
        self.code.append(f"{'SRIFP'[level]}{index + 1:07d}")
        self.qty.append(qty)
        self.uom.append(uom)
        self.batch.append(batch)
        self.supplier.append(supplier)
        return index

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class ShipLine:
    lot: int
    time: float
    qty: float
    shipment: int = 0
    position: int = 0


@dataclass
class Plant:
    lots: Lots = field(default_factory=Lots)
    batches: list[Batch] = field(default_factory=list)
    ship_lines: list[ShipLine] = field(default_factory=list)
    shipment_customer: list[int] = field(default_factory=list)
    line_day_count: dict[tuple[str, str], int] = field(default_factory=dict)

    def batch(self, kind: str, line: str, start: float, end: float, rng: random.Random) -> Batch:
        day = (START + timedelta(days=start)).strftime("%Y%m%d")
        k = self.line_day_count.get((line, day), 0) + 1
        self.line_day_count[(line, day)] = k
        ops = rng.sample(OPERATORS, rng.choice((1, 1, 2, 2, 3)))
        b = Batch(f"{line}-{day}-{k:02d}", kind, line, start, end, ops, [])
        self.batches.append(b)
        return b


def _spread(total: int, n: int, lo: int, hi: int, rng: random.Random) -> list[int]:
    """n integers in [lo, hi] adding up to total (clamped to what is possible): lo each, and
    the rest handed out one at a time at random."""
    total = min(max(total, n * lo), n * hi)
    values = [lo] * n
    for _ in range(total - n * lo):
        i = rng.randrange(n)
        while values[i] >= hi:
            i = rng.randrange(n)
        values[i] += 1
    return values


class LineSchedule:
    """A batch starts on the line that frees up first, once its inputs are there."""

    def __init__(self, kind: str) -> None:
        count, self.hours = LINES[kind]
        self.free = [(0.0, f"{LINE_PREFIX[kind]}-{i + 1:02d}") for i in range(count)]

    def place(self, ready: float, rng: random.Random) -> tuple[str, float, float]:
        free, line = heapq.heappop(self.free)
        start = max(ready, free + 0.005)
        end = start + rng.uniform(*self.hours) / 24
        heapq.heappush(self.free, (end, line))
        return line, start, end


Slot = tuple[float, int, float]  # (ready time, lot index, quantity this use consumes)


class Feed:
    """Uses of lower-level lots in the order they become ready: a batch takes the next ones,
    never the same lot twice (a lot it would repeat waits for the next batch)."""

    def __init__(
        self,
        lots: Lots,
        members: list[int],
        uses: int,
        lag: tuple[float, float],
        rng: random.Random,
    ) -> None:
        per_lot = _spread(uses, len(members), 1 if uses >= len(members) else 0, 100, rng)
        self.slots: list[Slot] = []
        for lot, u in zip(members, per_lot, strict=True):
            for _ in range(u):
                self.slots.append((lots.time[lot] + rng.uniform(*lag), lot, lots.qty[lot] / u))
        self.slots.sort()
        self.pos = 0
        self.held: list[Slot] = []

    def take(self, m: int) -> list[Slot]:
        chosen: list[Slot] = []
        seen: set[int] = set()
        held: list[Slot] = []
        for s in self.held:
            if len(chosen) < m and s[1] not in seen:
                chosen.append(s)
                seen.add(s[1])
            else:
                held.append(s)
        while len(chosen) < m and self.pos < len(self.slots):
            s = self.slots[self.pos]
            self.pos += 1
            if s[1] in seen:
                held.append(s)
            else:
                chosen.append(s)
                seen.add(s[1])
        self.held = held
        return chosen


@dataclass
class Always:
    """An ingredient every batch of a step takes: the lot delivered last before it starts."""

    times: list[float]
    lots: list[int]
    share: float

    def at(self, t: float) -> int:
        return self.lots[max(bisect_right(self.times, t) - 1, 0)]


@dataclass(frozen=True)
class Step:
    kind: str
    level: int
    outputs: int
    batches: int
    products: list[str]
    uom: str
    convert: float  # output quantity per kg of input


def _produce(
    plant: Plant,
    step: Step,
    feeds: list[tuple[Feed, list[int]]],
    always: Always | None,
    per_case: Feed | None,
    rng: random.Random,
    fermentation_at: int = -1,
) -> list[int]:
    """One production step: batches take their inputs from the feeds, oldest first, run on the
    first free line, and make their output lots at the end. `per_case` is packaging: one
    carton per case made, so cases and cartons balance."""
    lots = plant.lots
    lines = LineSchedule(step.kind)
    outputs = _spread(step.outputs, step.batches, 1, 3, rng)
    made: list[int] = []
    for i, n_out in enumerate(outputs):
        taken = [s for feed, counts in feeds for s in feed.take(counts[i])]
        carton = per_case.take(1) if per_case else []
        if not taken:
            break
        ready = max(s[0] for s in taken + carton)
        if i == fermentation_at:
            line, start, end = FERMENTER, ready, ready + FERMENTATION_DAYS
        else:
            line, start, end = lines.place(ready, rng)
        b = plant.batch(step.kind, line, start, end, rng)
        b.inputs = [(lot, q) for _, lot, q in taken]
        mass = sum(q for _, lot, q in taken if lots.uom[lot] == "kg")
        if always is not None:
            extra = mass * always.share
            b.inputs.append((always.at(start), extra))
            mass += extra
        yield_ = 0.85 if rng.random() < 0.005 else rng.uniform(0.97, 0.995)
        total = mass * step.convert * yield_
        if step.uom == "EA":
            total = float(max(n_out, round(total)))
        weights = [rng.uniform(0.5, 1.5) for _ in range(n_out)]
        gtin = rng.choice(step.products)
        index = len(plant.batches) - 1
        for w in weights:
            q = total * w / sum(weights)
            if step.uom == "EA":
                q = float(round(q))
            lot = lots.add(step.level, end, gtin, q, step.uom, index, None)
            b.outputs.append(lot)
            made.append(lot)
        if carton:
            b.inputs.append((carton[0][1], sum(lots.qty[x] for x in b.outputs)))
    return made


def generate(sizes: Sizes, rng: random.Random) -> Plant:
    plant = Plant()
    lots = plant.lots
    # Deliveries: (time, supplier lot, raw lots it arrives as, gtin, uom).
    deliveries: list[tuple[float, int, int, str, str]] = []
    salt_sup = [
        lots.add(0, -1.0, SALT_GTIN, 0.0, "kg", -1, SUPPLIERS[0]) for _ in range(SALT_SUPPLIER_LOTS)
    ]
    for k in range(SALT_FILLS):
        lot = (
            salt_sup[0] if k < SALT_FIRST_LOT_FILLS else salt_sup[1 + k % (SALT_SUPPLIER_LOTS - 1)]
        )
        deliveries.append((k * DAYS / SALT_FILLS, lot, 1, SALT_GTIN, "kg"))
    exc_sup = [
        lots.add(0, -1.0, EXCIPIENT_GTIN, 0.0, "kg", -1, SUPPLIERS[1])
        for _ in range(EXCIPIENT_SUPPLIER_LOTS)
    ]
    for k in range(EXCIPIENT_DRUMS):
        lot = exc_sup[k * EXCIPIENT_SUPPLIER_LOTS // EXCIPIENT_DRUMS]
        deliveries.append((k * DAYS / EXCIPIENT_DRUMS, lot, 1, EXCIPIENT_GTIN, "kg"))
    n_sup = sizes.supplier_lots - SALT_SUPPLIER_LOTS - EXCIPIENT_SUPPLIER_LOTS
    n_raw = sizes.raw_lots - SALT_FILLS - EXCIPIENT_DRUMS
    for count in _spread(n_raw, n_sup, 1, 8, rng):
        packaging = rng.random() < 0.2
        gtin = rng.choice(PACKAGING if packaging else INGREDIENTS)
        t = rng.uniform(0.0, DAYS - 26.0)
        supplier = SUPPLIERS[2 + int(gtin[-4:-1]) % (len(SUPPLIERS) - 2)]
        sup = lots.add(0, t, gtin, 0.0, "EA" if packaging else "kg", -1, supplier)
        deliveries.append((t, sup, count, gtin, "EA" if packaging else "kg"))
    deliveries.sort()

    docks = LineSchedule("receiving")
    raw_of: dict[str, list[int]] = defaultdict(list)
    for t, sup, count, gtin, uom in deliveries:
        lots.time[sup] = min(lots.time[sup], t) if lots.time[sup] >= 0 else t
        line, start, end = docks.place(t, rng)
        b = plant.batch("receiving", line, start, end, rng)
        b.inputs = [(sup, 0.0)]  # settled below, once the raw lots' quantities are known
        for _ in range(count):
            qty = rng.uniform(200.0, 2_000.0) if uom == "kg" else 0.0
            kind = gtin if gtin in (SALT_GTIN, EXCIPIENT_GTIN) else uom
            raw = lots.add(1, end, gtin, qty, uom, len(plant.batches) - 1, None)
            b.outputs.append(raw)
            raw_of[kind].append(raw)

    salt = Always([lots.time[x] for x in raw_of[SALT_GTIN]], raw_of[SALT_GTIN], SALT_SHARE)
    excipient = Always(
        [lots.time[x] for x in raw_of[EXCIPIENT_GTIN]], raw_of[EXCIPIENT_GTIN], EXCIPIENT_SHARE
    )
    mixing = Step(
        "mixing", 2, sizes.intermediates, round(sizes.intermediates / 2), INTERMEDIATES, "kg", 1.0
    )
    counts = _spread(round(4.5 * mixing.batches), mixing.batches, 3, 6, rng)
    feed = Feed(lots, raw_of["kg"], sum(counts), (0.2, 25.0), rng)
    intermediates = _produce(
        plant, mixing, [(feed, counts)], salt, None, rng, fermentation_at=mixing.batches // 2
    )

    finishing = Step("finishing", 3, sizes.finished, round(sizes.finished / 2), FINISHED, "kg", 1.0)
    counts = _spread(round(2.5 * finishing.batches), finishing.batches, 2, 3, rng)
    feed = Feed(lots, intermediates, sum(counts), (0.05, 3.0), rng)
    finished = _produce(plant, finishing, [(feed, counts)], excipient, None, rng)

    packing = Step("packing", 4, sizes.shipped, round(sizes.shipped / 1.8), PACKED, "EA", 1 / 6)
    counts = _spread(round(1.2 * packing.batches), packing.batches, 1, 2, rng)
    feed = Feed(lots, finished, sum(counts), (0.05, 2.0), rng)
    cartons = Feed(lots, raw_of["EA"], packing.batches, (0.2, 25.0), rng)
    shipped = _produce(plant, packing, [(feed, counts)], None, cartons, rng)

    # What the always-used ingredients and the packaging actually gave: their lots' sizes.
    used: dict[int, float] = defaultdict(float)
    for b in plant.batches:
        for lot, q in b.inputs:
            used[lot] += q
    for lot in (*raw_of[SALT_GTIN], *raw_of[EXCIPIENT_GTIN], *raw_of["EA"]):
        lots.qty[lot] = round(used[lot] * rng.uniform(1.0, 1.05), 1)
    for b in plant.batches:
        if b.kind == "receiving":
            sup = b.inputs[0][0]
            q = sum(lots.qty[x] for x in b.outputs)
            b.inputs = [(sup, q)]
            lots.qty[sup] += q
    _ship(plant, shipped, sizes, rng)
    _assign_readings(plant, sizes)
    return plant


def _ship(plant: Plant, shipped: list[int], sizes: Sizes, rng: random.Random) -> None:
    lots = plant.lots
    for lot in shipped:
        t = lots.time[lot] + rng.uniform(0.5, 12.0)
        if t > DAYS:
            continue  # still in the warehouse
        qty = lots.qty[lot] * (0.8 if rng.random() < 0.05 else 1.0)
        parts = rng.choice((1, 1, 1, 2, 2, 3))
        cut = sorted(rng.uniform(0, qty) for _ in range(parts - 1))
        bounds = [0.0, *cut, qty]
        for a, z in itertools.pairwise(bounds):
            if round(z) - round(a) > 0:
                plant.ship_lines.append(
                    ShipLine(lot, t + rng.uniform(0, 0.5), float(round(z) - round(a)))
                )
    plant.ship_lines.sort(key=lambda s: s.time)
    shipment, position, size = 0, 0, rng.randint(4, 20)
    for line in plant.ship_lines:
        if position == size:
            shipment, position, size = shipment + 1, 0, rng.randint(4, 20)
        line.shipment, line.position = shipment, position
        position += 1
    plant.shipment_customer = [rng.randrange(sizes.customers) for _ in range(shipment + 1)]


def _assign_readings(plant: Plant, sizes: Sizes) -> None:
    budget = sizes.readings - sizes.fermentation_readings
    weight = sum(READING_WEIGHT.get(b.kind, 0) for b in plant.batches if b.line != FERMENTER)
    for b in plant.batches:
        if b.line == FERMENTER:
            b.readings = sizes.fermentation_readings
        else:
            b.readings = budget * READING_WEIGHT[b.kind] // weight
    rest = sizes.readings - sum(b.readings for b in plant.batches)
    for b in plant.batches[:rest]:
        b.readings += 1


# -- loading ---------------------------------------------------------------------------------


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


def _admin_url(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def _bench_url(url: str) -> str:
    return make_conninfo(url, dbname=BENCH_DB)


_PLAIN_INDEXES = """
select c.relname, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
from pg_index i join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public'
  and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
order by c.relname
"""


def build(url: str, scale: float, seed: int) -> tuple[dict[str, int], float]:
    """Drops and recreates trace_bench, migrates and fills it; returns the rows copied per
    table and the seconds it all took (indexes, vacuum and analyze included)."""
    t0 = time.perf_counter()
    with psycopg.connect(_admin_url(url), autocommit=True) as admin:
        admin.execute(f"drop database if exists {BENCH_DB} with (force)")
        admin.execute(f"create database {BENCH_DB}")
    bench = _bench_url(url)
    migrate(bench)
    rng = random.Random(seed)
    sizes = Sizes.at(scale)
    plant = generate(sizes, rng)
    _log(f"planned {len(plant.lots):,} lots and {len(plant.batches):,} batches", t0)
    loader = Loader(plant, sizes, rng)
    with psycopg.connect(bench, autocommit=True) as conn:
        indexes = conn.execute(_PLAIN_INDEXES).fetchall()  # loaded faster without them
        for _, name, _ in indexes:
            conn.execute(f"drop index {name}")  # type: ignore[arg-type]
    with psycopg.connect(bench) as conn, psycopg.connect(bench) as conn2:
        conn.execute("set synchronous_commit = off")
        conn2.execute("set synchronous_commit = off")
        conn.execute("set session_replication_role = replica")  # no FK checks: built whole
        loader.genealogy(conn)
        conn.execute("set session_replication_role = origin")
        conn.commit()
        _log(f"genealogy copied ({loader.counts['lot_links']:,} links)", t0)
        loader.readings(conn, conn2)
        loader.copy(conn, "sequence_gaps", iter(loader.holes))
        with conn.cursor() as cur:
            cur.executemany(
                "update edge_streams set high_water = %s, high_water_time = %s"
                " where stream_id = %s",
                [(high, t, stream) for stream, (high, t) in loader.high_water.items()],
            )
        for table, column in (("lots", "lot_id"), ("edge_streams", "stream_id")):
            conn.execute(
                f"select setval(pg_get_serial_sequence('{table}', '{column}'),"  # type: ignore[arg-type]
                f" (select max({column}) from {table}))"
            )
        conn.commit()
        conn2.commit()
        _log(f"{loader.counts['readings']:,} readings copied", t0)

    def run(statements: list[str]) -> None:
        with psycopg.connect(bench, autocommit=True) as c:
            c.execute("set maintenance_work_mem = '1GB'")
            for s in statements:
                c.execute(s)  # type: ignore[arg-type]

    with ThreadPoolExecutor(2) as pool:  # the readings' indexes on one core, the rest on the other
        list(pool.map(run, [[d for t, _, d in indexes if (t == "readings") == r] for r in (1, 0)]))
    _log(f"{len(indexes)} indexes rebuilt", t0)
    with psycopg.connect(bench, autocommit=True) as c:
        c.execute("set work_mem = '256MB'")
        rollups.rebuild(c)
        c.execute(genealogy.RECOUNT_ALL)
    _log("rollups, last places and lot quantities built, as ingest keeps them", t0)
    others = ", ".join([t for t in COPY if t != "readings"] + ROLLUP_TABLES)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, [["vacuum (analyze) readings"], [f"vacuum (analyze) {others}"]]))
    _log("vacuumed and analyzed", t0)
    return dict(loader.counts), time.perf_counter() - t0


def _log(what: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {what}", file=sys.stderr, flush=True)


# -- measuring -------------------------------------------------------------------------------


class OverBudget(Exception):
    """An answer ran past --timeout (checked before each statement it sends)."""


@dataclass
class Probe:
    """What one answer cost: time in statements (execute), in turning rows into Python
    objects (fetch), and per statement."""

    deadline: float = math.inf
    capture: bool = False
    sql_s: float = 0.0
    fetch_s: float = 0.0
    statements: int = 0
    by_statement: dict[str, list[float]] = field(default_factory=dict)  # [calls, seconds]
    captured: dict[str, tuple[str, Any]] = field(default_factory=dict)  # first (query, params)

    def record(self, query: Any, params: Any, seconds: float, call: bool = True) -> None:
        key = " ".join(str(query).split())
        self.sql_s += seconds
        self.statements += call
        entry = self.by_statement.setdefault(key, [0, 0.0])
        entry[0] += call
        entry[1] += seconds
        if self.capture and key not in self.captured:
            self.captured[key] = (str(query), params)


PROBE = Probe()  # the worker process's answer in progress


class TimedCursor(AsyncCursor[Row]):
    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        if time.perf_counter() > PROBE.deadline:
            raise OverBudget
        t0 = time.perf_counter()
        try:
            return await super().execute(query, params, **kwargs)
        finally:
            PROBE.record(query, params, time.perf_counter() - t0)

    async def fetchone(self) -> Row | None:
        t0 = time.perf_counter()
        try:
            return await super().fetchone()
        finally:
            PROBE.fetch_s += time.perf_counter() - t0

    async def fetchall(self) -> list[Row]:
        t0 = time.perf_counter()
        try:
            return await super().fetchall()
        finally:
            PROBE.fetch_s += time.perf_counter() - t0


class TimedServerCursor(AsyncServerCursor[Row]):
    """A named cursor does its work as rows are fetched: that time counts as its SQL."""

    query: Any = None

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        self.query = query
        t0 = time.perf_counter()
        try:
            return await super().execute(query, params, **kwargs)
        finally:
            PROBE.record(query, params, time.perf_counter() - t0)

    async def fetchmany(self, size: int = 0) -> list[Row]:
        if time.perf_counter() > PROBE.deadline:
            raise OverBudget
        t0 = time.perf_counter()
        try:
            return await super().fetchmany(size)
        finally:
            PROBE.record(self.query, None, time.perf_counter() - t0, call=False)


Kind = Literal["walk", "trace", "recall", "stream", "params", "scan"]


@dataclass(frozen=True)
class Job:
    scenario: str
    kind: Kind
    target: int | str  # a lot id, or a batch id
    direction: trace.Direction = "forward"
    points: int = 0  # batch parameters: the series' points per tag
    capture: bool = False  # keep the statements, for EXPLAIN

    @property
    def label(self) -> str:
        return f"params:{self.points}" if self.kind == "params" else self.kind


@dataclass
class Result:
    job: Job
    ms: float
    sql_ms: float = 0.0
    fetch_ms: float = 0.0
    statements: int = 0
    size: int = 0  # lots reached, recall lines, tags summarised, readings counted
    first_ms: float | None = None  # streamed: until the first rows
    timed_out: bool = False
    killed: bool = False  # past --timeout with no statement sent: stuck in Python
    by_statement: dict[str, list[float]] = field(default_factory=dict)
    captured: dict[str, tuple[str, Any]] = field(default_factory=dict)


LOTS: dict[int, trace.Lot] = {}  # resolved before the clock starts


async def _answer(conn: AsyncConnection, job: Job, t0: float) -> tuple[int, float | None]:
    """Runs the job; returns the answer's size and, streamed, when the first rows came."""
    if job.kind == "scan":
        sql = "select count(*) from readings where batch_id = %s"
        row = await (await conn.execute(sql, (job.target,))).fetchone()
        return (int(row[0]) if row else 0), None
    if job.kind == "params":
        batch = await queries.get_batch(conn, str(job.target))
        assert batch is not None, f"batch {job.target} is missing"
        return len((await queries.batch_parameters(conn, batch, job.points)).tags), None
    lot_id = int(job.target)
    if job.kind == "walk":
        return await trace.count_reachable(conn, lot_id, job.direction), None
    if job.kind == "trace":
        return len((await trace.trace(conn, LOTS[lot_id], job.direction)).lots), None
    if job.kind == "recall":
        return len((await trace.recall(conn, LOTS[lot_id])).lines), None
    rows, first = 0, None
    async for block in trace.recall_csv(conn, LOTS[lot_id]):
        first = first or (time.perf_counter() - t0) * 1000
        rows += block.count(b"\n")
    return rows, first


async def _run(conn: AsyncConnection, job: Job, timeout_s: float) -> Result:
    global PROBE
    if job.kind in ("trace", "recall", "stream") and int(job.target) not in LOTS:
        LOTS[int(job.target)] = await trace.resolve(conn, str(job.target))
    t0 = time.perf_counter()
    PROBE = Probe(deadline=t0 + timeout_s, capture=job.capture)
    size, first, timed_out = 0, None, False
    try:
        size, first = await _answer(conn, job, t0)
    except (OverBudget, psycopg.errors.QueryCanceled):
        timed_out = True
    return Result(
        job,
        ms=(time.perf_counter() - t0) * 1000,
        sql_ms=PROBE.sql_s * 1000,
        fetch_ms=PROBE.fetch_s * 1000,
        statements=PROBE.statements,
        size=size,
        first_ms=first,
        timed_out=timed_out,
        by_statement=PROBE.by_statement,
        captured=PROBE.captured,
    )


async def _work(url: str, jobs: list[Job], out: Any, timeout_s: float, budget_s: float) -> None:
    conn = await AsyncConnection.connect(
        url, autocommit=True, cursor_factory=TimedCursor, options=queries.SESSION_OPTIONS
    )
    conn.server_cursor_factory = TimedServerCursor
    await conn.execute(f"set statement_timeout = {int(timeout_s * 1000)}")
    out.put(("ready", conn.info.backend_pid))
    spent: dict[str, float] = defaultdict(float)
    stopped: set[tuple[str, str]] = set()
    for job in jobs:
        if (job.scenario, job.label) in stopped or spent[job.scenario] > budget_s:
            out.put(("skipped", job))
            continue
        out.put(("start", job))
        result = await _run(conn, job, timeout_s)
        spent[job.scenario] += result.ms / 1000
        if result.timed_out:
            stopped.add((job.scenario, job.label))
        out.put(("done", result))
    await conn.close()
    out.put(("end", None))


def _worker(url: str, jobs: list[Job], out: Any, timeout_s: float, budget_s: float) -> None:
    asyncio.run(_work(url, jobs, out, timeout_s, budget_s))


def measure(url: str, jobs: list[Job], timeout_s: float, budget_s: float) -> list[Result]:
    """Runs the jobs in a worker process, as the API would on one pooled connection. A job
    that outlives --timeout in Python (where no statement is sent, so nothing checks the
    clock) is killed with its session; the worker restarts without that kind of job."""
    ctx = multiprocessing.get_context("spawn")
    results: list[Result] = []
    todo = list(jobs)
    while todo:
        out = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(url, todo, out, timeout_s, budget_s))
        proc.start()
        backend, running, done, since = 0, None, 0, time.monotonic()
        while True:
            try:
                message, payload = out.get(timeout=1.0)
            except queue.Empty:
                if proc.is_alive() and time.monotonic() - since < timeout_s + 30:
                    continue
                proc.kill()
                proc.join()
                if backend:
                    with psycopg.connect(url, autocommit=True) as admin:
                        admin.execute("select pg_terminate_backend(%s)", (backend,))
                if running is None:
                    raise RuntimeError("the benchmark worker died: see its traceback") from None
                results.append(Result(running, timeout_s * 1000, timed_out=True, killed=True))
                _progress(results[-1])
                key = (running.scenario, running.label)
                todo = [j for j in todo[done + 1 :] if (j.scenario, j.label) != key]
                break
            since = time.monotonic()
            if message == "ready":
                backend = payload
            elif message == "start":
                running = payload
            elif message in ("done", "skipped"):
                done, running = done + 1, None
                if message == "done":
                    results.append(payload)
                    _progress(payload)
            else:
                proc.join()
                todo = []
                break
    return results


def _progress(r: Result) -> None:
    took = f"> {r.ms / 1000:.0f} s: stopped" if r.timed_out else f"{r.ms:10.1f} ms"
    j = r.job
    print(
        f"  {j.scenario:11} {j.label:11} {j.target!s:>18} {took}  size {r.size:,}",
        file=sys.stderr,
        flush=True,
    )


# -- what to measure -------------------------------------------------------------------------


@dataclass
class Targets:
    ordinary: list[int]
    recall_10k: list[tuple[int, int]]  # (lot id, lots it reaches)
    recall_500k: tuple[int, int]
    batch: str
    batch_readings: int
    scale: float


async def _reach(url: str, lot_ids: list[int]) -> dict[int, int]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return {x: await trace.count_reachable(conn, x, "forward") for x in lot_ids}


def choose(url: str, samples: int, recall_runs: int, seed: int) -> Targets:
    """Random intermediate and finished lots; the salt fills nearest 10,000 lots reached and
    the salt supplier lot nearest 500,000 (both times the scale); the fermentation batch."""
    with psycopg.connect(url, autocommit=True) as conn:

        def ids(where: str, *params: Any) -> list[int]:
            return [r[0] for r in conn.execute(f"select lot_id from lots where {where}", params)]  # type: ignore[arg-type]

        scale = len(ids("true")) / 1_000_000
        ordinary = ids("gtin = any(%s) order by lot_id", INTERMEDIATES + FINISHED)
        fills = ids("gtin = %s and origin = 'own'", SALT_GTIN)
        salt = ids("gtin = %s and origin = 'supplier'", SALT_GTIN)
        big = conn.execute(
            "select batch_id, (select count(*) from readings r where r.batch_id = b.batch_id)"
            " from batches b where line_id = %s",
            (FERMENTER,),
        ).fetchone()
    assert big is not None, "no fermentation batch: was trace_bench built by this script?"
    reach = asyncio.run(_reach(url, fills + salt))
    near_10k = sorted(fills, key=lambda x: abs(reach[x] - 10_000 * scale))[:recall_runs]
    widest = min(salt, key=lambda x: abs(reach[x] - 500_000 * scale))
    return Targets(
        ordinary=random.Random(seed).sample(ordinary, min(samples, len(ordinary))),
        recall_10k=[(x, reach[x]) for x in near_10k],
        recall_500k=(widest, reach[widest]),
        batch=big[0],
        batch_readings=big[1],
        scale=scale,
    )


def plan(t: Targets, recall_runs: int, param_runs: int) -> list[Job]:
    """Each answer next to its baseline, on the same lot or batch, in the same run."""
    jobs = [  # untimed: a fresh connection's catalogue lookups
        Job("warm-up", "walk", t.ordinary[0], "backward"),
        Job("warm-up", "scan", t.batch),
    ]
    for direction in ("backward", "forward"):
        for i, lot in enumerate(t.ordinary):
            jobs.append(Job(direction, "walk", lot, direction))
            jobs.append(Job(direction, "trace", lot, direction, capture=i == 0))
    for i, (lot, _) in enumerate(t.recall_10k):
        jobs.append(Job("recall-10k", "walk", lot))
        jobs.append(Job("recall-10k", "stream", lot, capture=i == 0))
        jobs.append(Job("recall-10k", "recall", lot, capture=i == 0))
    lot = t.recall_500k[0]
    for i in range(recall_runs):
        jobs.append(Job("recall-500k", "walk", lot))
        jobs.append(Job("recall-500k", "stream", lot, capture=i == 0))
    jobs.append(Job("recall-500k", "recall", lot))
    for i in range(param_runs):
        jobs.append(Job("parameters", "scan", t.batch))
        jobs.append(Job("parameters", "params", t.batch, capture=i == 0))
        jobs.append(Job("parameters", "params", t.batch, points=1000, capture=i == 0))
    return jobs


# -- the report ------------------------------------------------------------------------------

# What the README's table shows: (row, scenario, answer, baseline, target, limit in ms, and
# whether the limit holds for the p95 (else the p50) and the answer must stay within 2x the
# bare walk).
ROWS = (  # {fill}, {salt}, {readings}: what the data set at hand gives
    ("backward trace, ordinary lot", "backward", "trace", "walk", "p95 < 20 ms", 20, 1, 1),
    ("forward trace, ordinary lot", "forward", "trace", "walk", "p95 < 20 ms", 20, 1, 1),
    ("recall, raw lot reaching {fill} lots", "recall-10k", "recall", "walk", "< 150 ms", 150, 0, 1),
    ("same, streamed", "recall-10k", "stream", "walk", "< 150 ms", 150, 0, 1),
    ("recall, ingredient reaching {salt} lots", "recall-500k", "recall", "walk", "-", 0, 0, 0),
    ("same, streamed", "recall-500k", "stream", "walk", "< 3 s", 3000, 0, 1),
    (
        "batch parameters, {readings} readings",
        "parameters",
        "params:0",
        "scan",
        "< 200 ms",
        200,
        0,
        0,
    ),
    ("same, with 1000-point series", "parameters", "params:1000", "scan", "< 200 ms", 200, 0, 0),
)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def report(results: list[Result], t: Targets, timeout_s: float) -> list[str]:
    by: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        by[(r.job.scenario, r.job.label)].append(r)
    rows: list[list[str]] = []
    sizes = {
        "fill": f"{statistics.median(n for _, n in t.recall_10k):,.0f}",
        "salt": f"{t.recall_500k[1]:,}",
        "readings": f"{t.batch_readings:,}",
    }
    for what, scenario, label, baseline, target, limit, on_p95, vs_walk in ROWS:
        what = what.format(**sizes)
        runs = by.get((scenario, label), [])
        if not runs:
            continue
        ok = [r.ms for r in runs if not r.timed_out]
        base = [r.ms for r in by.get((scenario, baseline), []) if not r.timed_out]
        b50, b95 = (statistics.median(base), _pct(base, 0.95)) if base else (math.nan, math.nan)
        target += ", <= 2x walk" if vs_walk and limit else ""
        count = f"{len(ok)}" if len(ok) == len(runs) else f"{len(ok)} of {len(runs)}"
        if not ok:
            over = f"> {timeout_s * 1000:,.0f}"
            ratio = f"> {timeout_s * 1000 / b50:,.0f}x" if base else "-"
            verdict = f"{'no' if limit else '-'} (stopped at {timeout_s:.0f} s)"
            rows.append([what, count, "-", over, "-", "-", f"{_ms(b50)} / {_ms(b95)}", ratio,
                         target, verdict])  # fmt: skip
            continue
        p50, p95 = statistics.median(ok), _pct(ok, 0.95)
        met = (p95 if on_p95 else p50) < limit and (not vs_walk or p95 / b95 <= MAX_WALK_RATIO)
        verdict = "yes" if met else "no" if limit else "-"
        firsts = [r.first_ms for r in runs if r.first_ms is not None]
        if firsts:
            what += f" (first rows {_ms(statistics.median(firsts))} ms)"
        size = statistics.median(r.size for r in runs if not r.timed_out)
        rows.append([what, count, f"{size:,.0f}", _ms(p50), _ms(p95), _ms(max(ok)),
                     f"{_ms(b50)} / {_ms(b95)}", f"{p50 / b50:,.1f}x / {p95 / b95:,.1f}x",
                     target, verdict])  # fmt: skip
    head = ["query", "runs", "lots / lines", "p50 ms", "p95 ms", "max ms",
            "baseline p50 / p95 ms", "answer / baseline", "target", "met"]  # fmt: skip
    out = _table(head, rows)
    out += ["", "Where the time goes (medians per answer; Python = total - SQL - row loading):", ""]
    rows = []
    for (scenario, label), runs in by.items():
        if label in ("walk", "scan") or scenario == "warm-up":
            continue
        per: dict[str, float] = defaultdict(float)
        for r in runs:
            for key, (_, seconds) in r.by_statement.items():
                per[key] += seconds
        total = sum(per.values()) or 1.0
        top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
        med = statistics.median
        if all(r.killed for r in runs):
            note = f"killed after {timeout_s:.0f} s without sending a statement: stuck in Python"
            rows.append([f"{scenario} {label}", str(len(runs)), f"> {timeout_s * 1000:,.0f}",
                         "?", "?", "?", "?", note])  # fmt: skip
            continue
        stopped = " (stopped: so far)" if all(r.timed_out for r in runs) else ""
        rows.append([
            f"{scenario} {label}{stopped}",
            str(len(runs)),
            _ms(med(r.ms for r in runs)),
            _ms(med(r.sql_ms for r in runs)),
            _ms(med(r.fetch_ms for r in runs)),
            _ms(med(r.ms - r.sql_ms - r.fetch_ms for r in runs)),
            f"{med(r.statements for r in runs):,.0f}",
            "; ".join(f"{s / total:.0%} `{k[:56]}`" for k, s in top),
        ])  # fmt: skip
    head = ["answer", "runs", "total ms", "SQL ms", "row loading ms", "Python ms", "statements",
            "top statements by SQL time"]  # fmt: skip
    return out + _table(head, rows)


def explain(url: str, results: list[Result], timeout_s: float, limit: int = 14) -> list[str]:
    """EXPLAIN ANALYZE of the statements captured answers sent, costliest first."""
    seen: dict[str, tuple[str, Any, str, int, float]] = {}
    for r in results:
        for key, (query, params) in r.captured.items():
            calls, seconds = r.by_statement.get(key, [0, 0.0])
            if key not in seen or seen[key][4] < seconds:
                label = f"{r.job.scenario} {r.job.label}"
                seen[key] = (query, params, label, int(calls), seconds)
    ranked = sorted(seen.items(), key=lambda kv: -kv[1][4])[:limit]
    rows: list[list[str]] = []
    plans: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"set statement_timeout = {int(timeout_s * 1000)}")
        for key, (query, params, label, calls, seconds) in ranked:
            cells = [label, f"`{key[:80]}`", str(calls), f"{seconds * 1000:,.1f}"]
            try:
                sql = f"explain (analyze, buffers, format json) {query}"
                row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
            except psycopg.Error as err:
                rows.append([*cells, type(err).__name__, "", "", ""])
                continue
            doc = row[0][0] if row else {}
            top = doc.get("Plan", {})
            rows.append([*cells, f"{doc.get('Planning Time', 0):.1f}",
                         f"{doc.get('Execution Time', 0):.1f}", str(_chunks(top)),
                         f"{top.get('Actual Rows', 0):,}"])  # fmt: skip
            if len(plans) < 4:
                sql = f"explain (analyze, costs off) {query}"
                text = _fold([r[0] for r in conn.execute(sql, params)])  # type: ignore[call-overload]
                plans.append(f"-- {label}: {key[:120]}\n" + "\n".join(text))
    head = ["answer", "statement", "calls", "their SQL ms", "planning ms", "execution ms",
            "chunks in plan", "rows"]  # fmt: skip
    out = ["", "EXPLAIN ANALYZE of each statement, as captured from one answer (costliest first):"]
    return [*out, "", *_table(head, rows), "", "```", "\n\n".join(plans), "```"]


def _fold(plan: list[str]) -> list[str]:
    """A plan with each run of chunk scans (and what is under them) folded into one line."""
    out: list[str] = []
    run: list[str] = []  # the node names of the chunk scans being folded
    depth = -1  # indentation of the chunk scans being folded
    for line in plan:
        indent = len(line) - len(line.lstrip(" "))
        if run and indent > depth:
            continue  # a detail of a folded chunk scan
        if " on _hyper_" in line and (not run or indent == depth):
            run.append(line.strip().removeprefix("->").strip().split(" on ")[0].split(" using ")[0])
            depth = indent
            continue
        if run:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(run).items()))
            out.append(" " * depth + f"->  [{len(run)} chunks: {kinds}]")
            run = []
        out.append(line)
    if run:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(run).items()))
        out.append(" " * depth + f"->  [{len(run)} chunks: {kinds}]")
    return out


def _chunks(node: dict[str, Any]) -> int:
    """How many hypertable chunks a plan scans."""
    own = 1 if str(node.get("Relation Name", "")).startswith("_hyper_") else 0
    return own + sum(_chunks(child) for child in node.get("Plans", []))


def _server(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select name || '=' || current_setting(name) from pg_settings where name in"
            " ('shared_buffers', 'work_mem', 'jit', 'random_page_cost') order by name"
        ).fetchall()
        chunks = conn.execute("select count(*) from show_chunks('readings')").fetchone()
    n = chunks[0] if chunks else 0
    return f"{', '.join(r[0] for r in rows)}; readings in {n} chunks; {os.cpu_count()} cores"


def _code() -> str:
    """Which cloud_collector this run measured: its folder, and its commit if it has one."""
    folder = Path(queries.__file__).resolve().parent.parent
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return str(folder)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "cloud_collector"], capture_output=True, text=True
    ).stdout.strip()
    return f"{folder} at {head.stdout.strip()}" + (" with uncommitted changes" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scale", type=float, default=1.0, help="share of the full data set (1,000,000 lots)")
    add("--seed", type=int, default=5)
    add("--lots", type=int, default=100, help="random ordinary lots, traced both ways")
    add("--recall-runs", type=int, default=3, help="raw lots for the 10k recall; 500k runs")
    add("--param-runs", type=int, default=10)
    add("--timeout", type=float, default=120.0, help="seconds one answer may take")
    add("--budget", type=float, default=300.0, help="seconds for each scenario's runs")
    add("--reuse", action="store_true", help="measure the trace_bench built last time")
    add("--no-explain", action="store_true")
    args = parser.parse_args()
    base = os.environ.get("TRACE_DATABASE_URL")
    if not base:
        sys.exit('TRACE_DATABASE_URL is not set: run eval "$(bash deploy/services.sh up)" first')
    url = _bench_url(base)
    head = "Genealogy benchmark"
    if not args.reuse:
        counts, seconds = build(base, args.scale, args.seed)
        head += (
            f" at --scale {args.scale:g}: {counts['lots']:,} lots, {counts['lot_links']:,}"
            f" links, {counts['batches']:,} batches, {counts['readings']:,} readings,"
            f" generated and loaded in {seconds:.0f} s"
        )
    head += f"; code measured: {_code()}"
    t0 = time.perf_counter()
    t = choose(url, args.lots, args.recall_runs, args.seed)
    _log(f"10k recall: lots reaching {[n for _, n in t.recall_10k]}", t0)
    results = measure(url, plan(t, args.recall_runs, args.param_runs), args.timeout, args.budget)
    lines = [
        f"### {head}",
        "",
        f"{len(t.ordinary)} random intermediate and finished lots, traced both ways; salt fills"
        f" reaching {', '.join(f'{n:,}' for _, n in t.recall_10k)} lots; the salt supplier lot"
        f" reaching {t.recall_500k[1]:,}; the fermentation batch's {t.batch_readings:,} readings."
        " Baseline: the bare walk (`trace.count_reachable`) over the same lot, run next to it;"
        " for batch parameters, a bare `count(*)` of the batch's readings.",
        "",
        *report(results, t, args.timeout),
        "",
        f"Server: {_server(url)}.",
    ]
    if not args.no_explain:
        lines += explain(url, results, args.timeout)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

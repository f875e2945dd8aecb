"""The plant generated in memory: batches take their inputs oldest first, run on the line
that frees up first, and make one to three lots; then shipments and each batch's readings."""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

from bench.genealogy.plant import (
    DAYS,
    EXCIPIENT_DRUMS,
    EXCIPIENT_GTIN,
    EXCIPIENT_SHARE,
    EXCIPIENT_SUPPLIER_LOTS,
    FERMENTATION_DAYS,
    FERMENTER,
    FINISHED,
    INGREDIENTS,
    INTERMEDIATES,
    LINE_PREFIX,
    LINES,
    PACKAGING,
    PACKED,
    READING_WEIGHT,
    SALT_FILLS,
    SALT_FIRST_LOT_FILLS,
    SALT_GTIN,
    SALT_SHARE,
    SALT_SUPPLIER_LOTS,
    SUPPLIERS,
    Lots,
    Plant,
    ShipLine,
    Sizes,
)


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

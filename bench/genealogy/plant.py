"""The generated plant's shape and sizes: its lines and what they measure, the products,
the ingredients in everything, how many lots of each level a --scale gives, and the lots,
batches and shipment lines the generator fills in memory."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from protocols.gs1 import check_digit as gs1_check_digit

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

"""Messages an edge publishes and the acks a collector answers with (contract version 1).

Every record an edge captures gets a sequence number, dense and increasing within its
(edge, stream, epoch). A message carries a contiguous run of records, so a collector can
commit them idempotently and acknowledge exactly what it committed, however the edge
regroups them when it resends. The epoch changes only when an edge loses its outbox
(a new install), which starts the numbering again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from protocols import gs1
from protocols.strict import Strict as BaseStrict

CONTRACT: Literal["trace.v1"] = "trace.v1"
# Sequence numbers are stored as PostgreSQL bigint and SQLite integer: both end here.
MAX_SEQ = 2**63 - 1
# Items one trace event may name (per side for a transformation), and the input-to-output
# lot links one transformation may make (the genealogy's work per event is bounded by it).
MAX_ITEMS = 10_000
MAX_LOT_LINKS = 250_000
# Records one message may carry, and refused runs one ack may list.
MAX_RECORDS = 100_000
MAX_REFUSALS = 100

Quality = Literal["good", "uncertain", "bad"]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]

# Times a plant can have produced: a clock reset to 1970 or a typo'd year 9999 is refused
# here (each would make a TimescaleDB chunk of its own); the collector also refuses times
# too far past its own clock.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset (e.g. 2026-11-25T10:00:00Z)")
    if not EARLIEST <= value < LATEST:
        raise ValueError(
            f"timestamp {value.isoformat()} is outside {EARLIEST.year}-{LATEST.year - 1}: "
            "check the clock of the device or line PC"
        )
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def storable(value: str) -> str:
    """Text PostgreSQL can store: no NUL character, no lone UTF-16 surrogate."""
    if "\x00" in value:
        raise ValueError(
            "text contains a NUL character (\\u0000), which the database cannot store: "
            "clean it where it is captured (a PLC string padded with NULs is trimmed there)"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text is not valid Unicode ({err.reason} at {err.start})") from None
    return value


# Free text of the contract, bounded and storable (names as the domain uses them).
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(storable)]
Detail = Annotated[str, StringConstraints(max_length=500), AfterValidator(storable)]
Unit = Annotated[str, StringConstraints(max_length=32), AfterValidator(storable)]
Uom = Annotated[str, StringConstraints(max_length=16), AfterValidator(storable)]
Code = Annotated[str, StringConstraints(max_length=20), AfterValidator(storable)]  # GS1 AI 10/21
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(storable)]
# Numbers a float8 column and JSON both hold: no NaN or infinity.
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseStrict):
    """A record of the contract: strict, and frozen (what was captured is not edited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reading(Strict):
    """One process value read from a device, bound to the line's batch (None = line idle)."""

    kind: Literal["reading"] = "reading"
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime  # when the edge took it
    device_time: AwareDatetime | None = None  # the device's own timestamp, when it has one
    line: Identifier
    batch: Name | None
    device: Identifier
    tag: Identifier
    value: Finite | None  # None only when the device gave no usable value (bad quality)
    unit: Unit | None = None
    quality: Quality = "good"
    detail: Detail | None = None  # why quality is not good

    @model_validator(mode="after")
    def _value_or_bad(self) -> Reading:
        if self.value is None and self.quality == "good":
            raise ValueError("a reading with quality 'good' must have a value")
        return self


class BatchEvent(Strict):
    """A batch started or ended on a line: who or what did it, and when."""

    kind: Literal["batch_started", "batch_ended"]
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    line: Identifier
    batch: Name
    by: Name  # operator, PLC tag, MES, API client
    # The edge made the batch id by the line's numbering rule (none was given at the start).
    # Written only when true: a collector older than the field still takes every other
    # batch event (its contract forbids unknown fields).
    numbered_by_rule: bool = Field(default=False, exclude_if=lambda made: not made)


class DeviceEvent(Strict):
    """A device went offline (the gap starts) or came back (the gap ends)."""

    kind: Literal["device_offline", "device_online"]
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    line: Identifier
    device: Identifier
    detail: Detail | None = None


class ReadingsDropped(Strict):
    """The edge's outbox was full and deleted readings by its policy: a known, counted gap."""

    kind: Literal["readings_dropped"] = "readings_dropped"
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    stream: Identifier
    count: int = Field(ge=1, le=2**31 - 1)  # stored as PostgreSQL integer
    first_seq: int = Field(ge=0, le=MAX_SEQ)
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    policy: Literal["thin_oldest", "drop_oldest", "drop_newest"]


class TagSpec(Strict):
    device: Identifier
    tag: Identifier
    unit: Unit | None = None
    low: Finite | None = None
    high: Finite | None = None


class TagSpecs(Strict):
    """The spec limits the edge's device profiles declare, sent when the edge starts, so
    the collector can flag excursions in a batch's readings."""

    kind: Literal["tag_specs"] = "tag_specs"
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    specs: list[TagSpec] = Field(max_length=100_000)


# -- trace events shaped after GS1 EPCIS 2.0 ----------------------------------------------
# Identifiers are GS1 Digital Link URIs or EPC URNs as captured; each item also carries the
# plain GS1 keys (gtin, lot, serial, sscc) so the genealogy can join on them whatever form
# an event used.

Uri = Annotated[str, StringConstraints(min_length=1, max_length=500), AfterValidator(storable)]
# storing: put-away and moves between places; picking; cycle_counting and stock_taking:
# counts that set a place's quantity (CBV 2.0 words; cloud_collector/stock.py).
BizStep = Literal[
    "receiving",
    "shipping",
    "commissioning",
    "consuming",
    "loading",
    "storing",
    "inspecting",
    "picking",
    "cycle_counting",
    "stock_taking",
]
Disposition = Literal["in_progress", "in_transit", "active", "container_closed", "recalled"]


class Item(Strict):
    """One thing an event is about: a unit (epc) or a quantity of a lot (epc_class)."""

    epc: Uri | None = None  # an instance: SGTIN, SSCC, GRAI (a unit, a pallet, a crate)
    epc_class: Uri | None = None  # a lot-level class: GTIN + lot
    quantity: Finite | None = Field(default=None, ge=0)
    uom: Uom | None = None
    gtin: str | None = Field(default=None, pattern=r"^[0-9]{14}$")
    lot: Code | None = None
    serial: Code | None = None
    sscc: str | None = Field(default=None, pattern=r"^[0-9]{18}$")
    expiry: date | None = None  # GS1 AI 17 on its label: FEFO picking advice
    raw: Detail | None = None  # tag hex or scan text, as captured
    unknown_reason: Detail | None = None  # why it decodes to nothing

    @model_validator(mode="after")
    def _identified(self) -> Item:
        if self.epc is None and self.epc_class is None and self.raw is None:
            raise ValueError("an item needs epc, epc_class or at least its raw capture")
        return self


class BizTransaction(Strict):
    type: Literal["po", "desadv", "inv", "bol", "prodorder", "recadv"]
    id: Name


class RfidSighting(Strict):
    """How a gate saw one tag within its window (the reads collapsed into one)."""

    epc_hex: str = Field(pattern=r"^[0-9A-Fa-f]+$", max_length=128)
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    count: int = Field(ge=1, le=MAX_SEQ)
    best_rssi_dbm: Finite | None = None
    antennas: list[Annotated[int, Field(ge=0, le=255)]] = Field(default_factory=list, max_length=64)
    direction: Literal["in", "out"] | None = None


# -- trading parties: who shipped to whom (EPCIS 2.0 sourceList / destinationList) --------
PartySide = Literal["source", "destination"]
# CBV 2.0 section 8.5: who owns the goods, who holds them, where they are.
PartyType = Literal["owning_party", "possessing_party", "location"]
MAX_PARTIES = 16


def _gln(value: str) -> str:
    if not gs1.valid(value):
        raise ValueError(
            f"{value} is not a GLN: its last digit is not its check digit (a wrong digit "
            "names another company or place)"
        )
    return value


Gln = Annotated[str, Field(pattern=r"^[0-9]{13}$"), AfterValidator(_gln)]
# GS1 AI 254 (an SGLN's extension): up to 20 characters of GS1's character set 82.
GlnExtension = Annotated[str, Field(pattern=r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$")]


class TradingParty(Strict):
    """One trading party of an event, as a dock's document, label or configuration names it:
    a party (owning or possessing) by its GLN, a location by its GLN and, for a place within
    it (a dock, a warehouse), the extension (GS1 AI 254)."""

    side: PartySide
    type: PartyType
    gln: Gln
    extension: GlnExtension | None = None

    @model_validator(mode="after")
    def _extension_of_a_place(self) -> TradingParty:
        if self.extension is not None and self.type != "location":
            raise ValueError(
                f"an extension names a place within a location; a party ({self.type}) is named by "
                "its GLN alone"
            )
        return self

    def key(self) -> gs1.Key:
        if self.type == "location":
            return gs1.Key("sgln", gln=self.gln, extension=self.extension)
        return gs1.Key("pgln", gln=self.gln)

    def uri(self) -> str:
        """As EPCIS names it: a GS1 Digital Link (/417/ a party, /414/.../254/ a place)."""
        return gs1.digital_link(self.key())


class ObjectEventRecord(Strict):
    """Units or lots observed, received or shipped (EPCIS ObjectEvent)."""

    kind: Literal["object_event"] = "object_event"
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    event_id: Name  # unique, made by the edge
    action: Literal["ADD", "OBSERVE", "DELETE"]
    biz_step: BizStep
    disposition: Disposition | None = None
    read_point: Identifier
    biz_location: Identifier | None = None
    items: list[Item] = Field(min_length=1, max_length=MAX_ITEMS)
    biz_transactions: list[BizTransaction] = Field(default_factory=list, max_length=100)
    line: Identifier | None = None
    batch: Name | None = None
    operator: Name | None = None
    device: Identifier | None = None
    sightings: list[RfidSighting] = Field(default_factory=list, max_length=MAX_ITEMS)
    # What makes this event incomplete, e.g. "no_document": read at a door bound to none.
    flags: list[Name] = Field(default_factory=list, max_length=32)
    # Who shipped to whom, where the dock's document, label or configuration says so. Added
    # to the contract later: absent from older edges' events, and left out when empty, so
    # an event without parties is the same JSON as before (a resend of one committed before
    # the collector knew the field equals it, and an older collector still reads it).
    parties: list[TradingParty] = Field(default_factory=list, max_length=MAX_PARTIES)

    @model_serializer(mode="wrap")
    def _without_empty_parties(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        out: dict[str, object] = handler(self)
        if not out.get("parties"):
            out.pop("parties", None)
        return out


class TransformationEventRecord(Strict):
    """A batch consumed inputs and produced outputs (EPCIS TransformationEvent): the lot
    genealogy's link. One per batch, sent when the batch ends.

    Limits, so that no event can make the genealogy build an inputs x outputs product
    without bound: at most MAX_ITEMS (10,000) inputs and as many outputs, and at most
    MAX_LOT_LINKS (250,000) input-to-output-lot links: distinct input lots (a unit that
    names no lot counts as one of its own) x distinct output lots (outputs that are units
    only join the batch's lot). Twenty pallets of one lot are one lot, not twenty."""

    kind: Literal["transformation_event"] = "transformation_event"
    seq: int = Field(ge=0, le=MAX_SEQ)
    time: AwareDatetime
    event_id: Name
    transformation_id: Name  # the batch id
    biz_step: BizStep = "commissioning"
    read_point: Identifier
    line: Identifier
    batch: Name
    inputs: list[Item] = Field(default_factory=list, max_length=MAX_ITEMS)
    outputs: list[Item] = Field(default_factory=list, max_length=MAX_ITEMS)
    operators: list[Name] = Field(default_factory=list, max_length=100)
    started_at: AwareDatetime | None = None
    flags: list[Name] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _bounded_links(self) -> TransformationEventRecord:
        input_lots = len({_lot_key(item) for item in self.inputs})
        output_lots = max(1, len({_lot_key(item) for item in self.outputs if item.lot}))
        if input_lots * output_lots > MAX_LOT_LINKS:
            raise ValueError(
                f"{input_lots} input lots x {output_lots} output lots would make "
                f"{input_lots * output_lots:,} lot links, more than {MAX_LOT_LINKS:,}: "
                "record the batch as several transformations (one per output lot or per "
                "group of inputs)"
            )
        return self


def _lot_key(item: Item) -> tuple[str | None, ...]:
    """The lot an item names, or the unit itself when it names none."""
    if item.lot is not None:
        return ("lot", item.gtin or item.epc_class, item.lot)
    return ("unit", item.sscc or item.epc or item.raw)


Record = Annotated[
    Reading
    | BatchEvent
    | DeviceEvent
    | ReadingsDropped
    | ObjectEventRecord
    | TransformationEventRecord
    | TagSpecs,
    Field(discriminator="kind"),
]


def _check_contiguous(seqs: list[int]) -> None:
    first = seqs[0]
    for offset, seq in enumerate(seqs):
        if seq != first + offset:
            raise ValueError(
                f"records[{offset}].seq is {seq}, expected {first + offset}: "
                "a message must carry a contiguous run of sequence numbers"
            )


class Envelope(Strict):
    """One MQTT message from an edge: a contiguous run of records of one stream."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    records: list[Record] = Field(min_length=1, max_length=MAX_RECORDS)

    @model_validator(mode="after")
    def _contiguous(self) -> Envelope:
        _check_contiguous([record.seq for record in self.records])
        return self

    @property
    def first_seq(self) -> int:
        return self.records[0].seq

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq


class EnvelopeRange(Strict):
    """An envelope read only as far as the range it carries: the header checked, each
    record only for a sequence number in range, the rest of it left as sent. A collector
    reads a message this way when the whole Envelope is invalid, to refuse its bad records
    one by one in an Ack (the range is known) instead of leaving the edge to resend them."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    records: list[dict[str, object]] = Field(min_length=1, max_length=MAX_RECORDS)

    @model_validator(mode="after")
    def _numbered(self) -> EnvelopeRange:
        seqs = []
        for offset, record in enumerate(self.records):
            seq = record.get("seq")
            if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
                raise ValueError(
                    f"records[{offset}].seq is {str(seq)[:40]}, not a sequence number "
                    f"(an integer 0..{MAX_SEQ})"
                )
            seqs.append(seq)
        _check_contiguous(seqs)
        return self

    @property
    def first_seq(self) -> int:
        return int(self.records[0]["seq"])  # type: ignore[call-overload]

    @property
    def last_seq(self) -> int:
        return int(self.records[-1]["seq"])  # type: ignore[call-overload]


class Refusal(Strict):
    """A run of records of an acknowledged message that the collector will never commit
    as sent, and why."""

    first_seq: int = Field(ge=0, le=MAX_SEQ)
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    reason: Reason


class Ack(Strict):
    """The collector's word on records first_seq..last_seq, the exact range of one message.

    - `refused` None: all of them are committed in the database (`duplicate`: all had been
      committed before, a resend).
    - `refused` set and `refusals` empty: none of them will ever be committed as sent
      (the whole message was refused, for the reason `refused` gives).
    - `refused` set and `refusals` listed: exactly the records of those runs are refused,
      each run with its reason; every other record of the range is committed. `refused`
      then sums them up.

    An edge deletes the committed records and quarantines the refused ones; either way the
    range is settled and the records behind it flow."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    first_seq: int = Field(ge=0, le=MAX_SEQ)
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    duplicate: bool = False  # all of it had been committed before (a resend)
    # Set when the collector will never commit these records as sent (invalid, or different
    # from what it committed under the same numbers): why, for the edge's quarantine.
    refused: Reason | None = None
    # Sorted, disjoint runs within first_seq..last_seq; empty: `refused` covers the range.
    refusals: list[Refusal] = Field(default_factory=list, max_length=MAX_REFUSALS)

    @model_validator(mode="after")
    def _consistent(self) -> Ack:
        if self.first_seq > self.last_seq:
            raise ValueError(f"first_seq {self.first_seq} is after last_seq {self.last_seq}")
        if self.refusals and self.refused is None:
            raise ValueError("refusals are listed but refused (their summary) is not set")
        after = self.first_seq
        for run in self.refusals:
            if not after <= run.first_seq <= run.last_seq <= self.last_seq:
                raise ValueError(
                    f"refusal {run.first_seq}..{run.last_seq} is not a sorted, disjoint run "
                    f"within {self.first_seq}..{self.last_seq}"
                )
            after = run.last_seq + 1
        return self

    def refused_runs(self) -> list[Refusal]:
        """The runs of the range that are refused (all of it, or the listed ones)."""
        if self.refused is None:
            return []
        if not self.refusals:
            return [Refusal(first_seq=self.first_seq, last_seq=self.last_seq, reason=self.refused)]
        return list(self.refusals)


# What one status may list: lines and devices of a line PC, and each device's last values.
MAX_STATUS_ITEMS = 1000


class LineState(Strict):
    """A line of the edge and the batch it runs now (None: idle)."""

    line: Identifier
    batch: Name | None = None
    batch_started_at: AwareDatetime | None = None


class TagValue(Strict):
    """A device's last value of one tag, as it was bound (None: no usable value)."""

    tag: Identifier
    value: Finite | None = None
    unit: Unit | None = None
    quality: Quality = "good"
    time: AwareDatetime


class DeviceState(Strict):
    """A device of the edge: whether data flows, its last error, its last values."""

    device: Identifier
    station: Identifier  # the line or dock door it serves
    connected: bool
    last_read_at: AwareDatetime | None = None
    offline_since: AwareDatetime | None = None
    failures: int = Field(default=0, ge=0, le=MAX_SEQ)
    last_error: Reason | None = None
    values: list[TagValue] = Field(default_factory=list, max_length=MAX_STATUS_ITEMS)


SHA256_HEX = r"^[0-9a-f]{64}$"
MAX_VERSION = 2**31 - 1


class SitePush(Strict):
    """A site configuration version the collector publishes, retained, on
    trace/v1/edges/{edge_id}/config/site (only collectors may publish there: the broker's
    ACL). `content` is the canonical JSON of the site document (device_profiles/sites.py)
    as stored, and `sha256` its hash: the edge hashes exactly these characters and refuses a
    push whose hash, edge id or version does not hold."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    version: int = Field(ge=1, le=MAX_VERSION)
    sha256: str = Field(pattern=SHA256_HEX)
    author: Name
    comment: Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable)] = ""
    published_at: AwareDatetime
    # The earlier version whose content this one restores (a rollback).
    restores: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    content: Annotated[str, StringConstraints(min_length=2, max_length=4 * 1024 * 1024)]


class SiteConfigState(Strict):
    """Which pushed site configuration the edge runs, and the last one it refused."""

    # None: the site file it started from (no version pushed and applied yet).
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    applied_at: AwareDatetime | None = None
    # Devices the last apply stopped and started again (changed or removed); the others
    # kept capturing.
    restarted: list[Identifier] = Field(default_factory=list, max_length=MAX_STATUS_ITEMS)
    # Devices the last apply moved to another line or dock door without a restart.
    moved: list[Identifier] = Field(default_factory=list, max_length=MAX_STATUS_ITEMS)
    refused_version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    refused_reason: Reason | None = None
    refused_at: AwareDatetime | None = None
    # Versions kept on the edge's disk to fall back to.
    kept: list[int] = Field(default_factory=list, max_length=100)


class EdgeStatus(Strict):
    """Retained on trace/v1/edges/{edge_id}/status; the broker publishes the offline form as
    the edge's last will when its connection dies.

    `session` is the time the edge put in the last will of its current connection (the
    offline form's `time`): it orders a will against the statuses of the same and of
    later connections, which the edges' clocks alone cannot (the will is written when
    the connection opens). The fields from `session` on were added later: an edge that
    does not send them is still understood."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    state: Literal["online", "offline"]
    time: AwareDatetime
    version: Name | None = None
    outbox_depth: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    outbox_oldest_age_s: Finite | None = Field(default=None, ge=0)
    outbox_dropped: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    # Records the edge holds in quarantine because an ack refused them.
    quarantined: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    alarms: list[Reason] = Field(default_factory=list, max_length=1000)
    last_ack_at: AwareDatetime | None = None
    session: AwareDatetime | None = None
    # How often the edge refreshes its status: a status older than a few of these is stale.
    interval_s: Finite | None = Field(default=None, gt=0, le=86_400)
    lines: list[LineState] = Field(default_factory=list, max_length=MAX_STATUS_ITEMS)
    devices: list[DeviceState] = Field(default_factory=list, max_length=MAX_STATUS_ITEMS)
    # The pushed site configuration it runs (added with provisioning; absent from older edges).
    site_config: SiteConfigState | None = None


class CollectorStatus(Strict):
    """Retained on trace/v1/collectors/{collector_id}/status: online while the collector
    consumes, offline when it stops (the broker publishes that as its last will when its
    connection dies). A collector keeps nothing the edges cannot send again, so an edge
    that sees one go offline sends again what it has in flight, to the living."""

    contract: Literal["trace.v1"] = CONTRACT
    collector_id: Identifier
    state: Literal["online", "offline"]
    time: AwareDatetime


# -- holds: what must not leave a shipping door -------------------------------------------
MAX_HELD_LOTS = 100_000
MAX_HELD_UNITS = 10_000  # per lot: the pallets, cases and items the collector knows of it
HELD_LOT: Literal["held_lot"] = "held_lot"  # the flag of an event that names a held lot


class HeldLot(Strict):
    """One lot on hold as the edges need it: its GS1 keys (gtin "" when the product is not
    known: then its lot code alone matches) and the units known to be of it, so that a
    pallet read by its SSCC or a case by its SGTIN is recognised without the label's lot."""

    gtin: str = Field(pattern=r"^([0-9]{14})?$")
    lot: Name
    reason: Reason
    since: AwareDatetime
    epcs: list[Uri] = Field(default_factory=list, max_length=MAX_HELD_UNITS)
    ssccs: list[Annotated[str, Field(pattern=r"^[0-9]{18}$")]] = Field(
        default_factory=list, max_length=MAX_HELD_UNITS
    )


class HoldSet(Strict):
    """Retained on trace/v1/holds: every lot on hold now, as one whole set (a later set
    replaces an earlier one; `time` orders them, so a set delivered late changes nothing)."""

    contract: Literal["trace.v1"] = CONTRACT
    kind: Literal["hold_set"] = "hold_set"
    time: AwareDatetime
    lots: list[HeldLot] = Field(default_factory=list, max_length=MAX_HELD_LOTS)


# -- probes: a profile read once against the live device, through its edge ----------------
MAX_PROBE_SECONDS = 30.0
# What an edge's probe may take beyond its listening time (connecting, one read of every
# tag); the edge ends a probe then, and the collector stops waiting a little later.
PROBE_MARGIN_S = 15.0
MAX_PROBE_TAGS = 1000
MAX_PROBE_ITEMS = 200  # RFID reads or scans shown; more are counted only
RequestId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
ProbeText = Annotated[str, StringConstraints(max_length=500), AfterValidator(storable)]


class ProbeRequest(Strict):
    """Published (not retained) by a collector on trace/v1/edges/{edge_id}/probe/request
    (only collectors may publish there: the broker's ACL). Either a device of the site the
    edge runs, by name, or a profile not yet in the site (its canonical JSON); listening
    devices (RFID, scanners) are listened to for `seconds`."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    request_id: RequestId
    requested_by: Name
    sent_at: AwareDatetime
    seconds: float = Field(default=5.0, gt=0, le=MAX_PROBE_SECONDS)
    device: Identifier | None = None
    profile: Annotated[str, StringConstraints(min_length=2, max_length=1024 * 1024)] | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> ProbeRequest:
        if (self.device is None) == (self.profile is None):
            raise ValueError("a probe names either a device of the running site or a profile")
        return self


class ProbeAlternative(Strict):
    """The same raw answer decoded under another setting (e.g. another word order)."""

    label: ProbeText
    value: Finite
    within_spec: bool | None = None


class ProbedTag(Strict):
    """One tag as the probe read it: where, the raw answer, the decoded value beside the
    spec limits."""

    tag: Name
    where: ProbeText
    raw: ProbeText
    value: Finite | None = None
    text: ProbeText | None = None
    unit: Unit | None = None
    quality: Quality
    detail: ProbeText | None = None
    spec_low: Finite | None = None
    spec_high: Finite | None = None
    within_spec: bool | None = None  # None: no limits, or no value
    alternatives: list[ProbeAlternative] = Field(default_factory=list, max_length=16)


class ProbeResult(Strict):
    """What a probe found; the edge publishes it on trace/v1/edges/{edge_id}/probe/result
    (only that edge may publish there). `error`: the probe could not run or the device did
    not answer, in words that name the fix; the tags then are empty."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    request_id: RequestId
    device: Identifier
    protocol: Name
    probed_at: AwareDatetime
    profile_sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    error: Reason | None = None
    tags: list[ProbedTag] = Field(default_factory=list, max_length=MAX_PROBE_TAGS)
    items: list[ProbeText] = Field(default_factory=list, max_length=MAX_PROBE_ITEMS)
    items_seen: int = Field(default=0, ge=0)  # all of them, also past those listed
    listened_s: float | None = Field(default=None, ge=0, le=10 * MAX_PROBE_SECONDS)

    @property
    def bad(self) -> list[ProbedTag]:
        return [t for t in self.tags if t.quality == "bad"]

    def summary(self) -> str:
        """One line for the audit."""
        if self.error is not None:
            return self.error
        if self.listened_s is not None:
            return f"{self.items_seen} item(s) in {self.listened_s:.1f} s"
        return f"{len(self.tags)} tag(s) read, {len(self.bad)} bad"

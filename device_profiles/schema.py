"""The device profile format, version 1.

Strict on purpose: an unknown key is an error naming its path, so a typo never turns into
a silently ignored setting. Versioned by `profile_version`; a future version 2 comes with
an explicit migration, never a second dialect read side by side.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]

# Registers each data type occupies: the one table that sizes every Modbus read.
REGISTER_COUNT: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecLimits(Strict):
    """Engineering-unit limits; a reading outside them is an excursion."""

    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SpecLimits:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high}): swap them")
        return self


class ModbusTag(Strict):
    name: Name
    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535, description="0-based register address")
    data_type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, max_length=32)
    spec: SpecLimits | None = None

    @property
    def register_count(self) -> int:
        return REGISTER_COUNT[self.data_type]

    @model_validator(mode="after")
    def _fits(self) -> ModbusTag:
        last = self.address + self.register_count - 1
        if last > 65535:
            raise ValueError(
                f"a {self.data_type} at register {self.address} ends at {last}, "
                "past the last Modbus address 65535"
            )
        if self.scale == 0:
            raise ValueError("scale 0 turns every value into the offset: use 1 for no scaling")
        return self


class BatchSource(Strict):
    """A tag whose value is the line's active batch: a change starts a new batch (ending the
    one before); an empty string or 0 means the line is idle. Its values are batch events,
    not readings."""

    tag: Name
    prefix: str = Field(default="", max_length=32, description="put before numeric batch ids")


class ModbusTcpConnection(Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusRtuConnection(Strict):
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(default=1, ge=1, le=247)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class OpcUaSecurity(Strict):
    """None, or Basic256Sha256 with Sign or SignAndEncrypt and this client's certificate."""

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: Path | None = Field(default=None, description="client certificate (DER or PEM)")
    private_key: Path | None = Field(default=None, description="client private key (PEM)")
    server_certificate: Path | None = Field(
        default=None, description="the server certificate to trust; none: trust on first use"
    )

    @model_validator(mode="after")
    def _keys_for_signing(self) -> OpcUaSecurity:
        if self.mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"security mode {self.mode} needs certificate and private_key: "
                "point them at this edge's client certificate and key files"
            )
        return self


class OpcUaConnection(Strict):
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=4.0, gt=0, le=120)


class Deadband(Strict):
    """Report a change only when it exceeds this: absolute in the tag's engineering unit
    (after scale and offset), or percent of the node's EURange."""

    type: Literal["absolute", "percent"] = "absolute"
    value: float = Field(ge=0)


class OpcUaTag(Strict):
    name: Name
    node_id: str = Field(min_length=3, description="e.g. ns=2;s=Reactor1.Temperature")
    sampling_interval_s: float | None = Field(
        default=None, ge=0, le=3600, description="server-side sampling; default: the profile's"
    )
    deadband: Deadband | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, max_length=32)
    spec: SpecLimits | None = None


class _Profile(Strict):
    profile_version: Literal[1]
    name: Name
    description: str | None = None
    vendor: str | None = None
    model: str | None = None
    batch_source: BatchSource | None = None

    @model_validator(mode="after")
    def _tags_consistent(self) -> _Profile:
        names = [t.name for t in getattr(self, "tags", [])]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"tag name {name!r} appears twice: tag names must be unique")
        if self.batch_source is not None and self.batch_source.tag not in names:
            raise ValueError(
                f"batch_source.tag {self.batch_source.tag!r} is not one of this profile's tags "
                f"({', '.join(names)})"
            )
        return self


class ModbusTcpProfile(_Profile):
    protocol: Literal["modbus_tcp"]
    connection: ModbusTcpConnection
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[ModbusTag] = Field(min_length=1)


class ModbusRtuProfile(_Profile):
    protocol: Literal["modbus_rtu"]
    connection: ModbusRtuConnection
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[ModbusTag] = Field(min_length=1)


class OpcUaProfile(_Profile):
    protocol: Literal["opcua"]
    connection: OpcUaConnection
    # subscription: the server reports changes (data-change notifications); poll: read all
    # tags every poll_interval_s, for servers whose subscriptions are unreliable.
    sampling: Literal["subscription", "poll"] = "subscription"
    publishing_interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    sampling_interval_s: float = Field(default=0.5, ge=0, le=3600)
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[OpcUaTag] = Field(min_length=1)


class SerialPort(Strict):
    """A serial line: RS-232/RS-485 port, or a USB virtual COM port."""

    port: str = Field(min_length=1, description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=115200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class RfidAntenna(Strict):
    port: int = Field(ge=1, le=64, description="the reader's antenna port number")
    read_point: Name = Field(description="where this antenna looks, e.g. dock-3")
    # At a gate, antennas on both sides of the door tell the direction: a tag seen outside
    # first and inside last moved in.
    side: Literal["outside", "inside"] | None = None


class RfidReaderProfile(_Profile):
    protocol: Literal["rfid_serial"]
    connection: SerialPort
    # mercury: the binary framed protocol of ThingMagic Mercury readers and modules;
    # ascii: one tag report per text line, as many gates and cheap readers offer.
    framing: Literal["mercury", "ascii"]
    antennas: list[RfidAntenna] = Field(min_length=1)
    # Reads of one tag at one read point within this window are one observation.
    window_s: float = Field(default=2.0, gt=0, le=3600)
    min_rssi_dbm: float | None = Field(default=None, ge=-120, le=0)

    @model_validator(mode="after")
    def _unique_ports(self) -> RfidReaderProfile:
        ports = [a.port for a in self.antennas]
        for port in ports:
            if ports.count(port) > 1:
                raise ValueError(f"antenna port {port} appears twice: list each port once")
        return self


ScanMeaning = Literal[
    "batch_start",  # a work order / batch label at a line: the line starts that batch
    "batch_end",  # the batch's end label (or the same batch label scanned again)
    "consume",  # an input lot or unit loaded into the active batch
    "produce",  # an output lot or unit the active batch made
    "operator",  # an operator badge: who does what follows
    "document",  # a purchase order or shipment document: binds a dock door to it
    "receive",  # a unit or lot received at a dock door
    "ship",  # a unit or lot loaded at a dock door
]


class ScanRule(Strict):
    """What a scan means at this station: the first rule that matches decides."""

    meaning: ScanMeaning
    # The scan must carry all these GS1 application identifiers (e.g. ["01", "10"]).
    ais: list[Annotated[str, Field(pattern=r"^\d{2,4}$")]] = Field(default_factory=list)
    # And/or its text must match this regular expression (searched, not anchored).
    pattern: str | None = None
    # For meaning "document": what the document is. Default: from the scan's GS1 data,
    # AI 400 (customer's purchase order) -> po, AI 402 (shipment id) -> desadv.
    document: Literal["po", "desadv"] | None = None

    @model_validator(mode="after")
    def _something_to_match(self) -> ScanRule:
        if not self.ais and self.pattern is None:
            raise ValueError("a rule needs ais or pattern (or both) to match scans with")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(
                    f"pattern {self.pattern!r} is not a regular expression: {err}"
                ) from err
        return self


class WedgeInput(Strict):
    """Keyboard-wedge style input: scans arrive as text lines on a file, FIFO or stdin."""

    path: str = Field(min_length=1, description="a file or FIFO path, or - for stdin")


class _ScannerProfile(_Profile):
    terminator: Literal["\r", "\n", "\r\n"] = "\r"
    rules: list[ScanRule] = Field(min_length=1)


class SerialScannerProfile(_ScannerProfile):
    protocol: Literal["scanner_serial"]
    connection: SerialPort


class WedgeScannerProfile(_ScannerProfile):
    protocol: Literal["scanner_wedge"]
    connection: WedgeInput


ModbusProfile = ModbusTcpProfile | ModbusRtuProfile
ScannerProfile = SerialScannerProfile | WedgeScannerProfile
DeviceProfile = Annotated[
    ModbusTcpProfile
    | ModbusRtuProfile
    | OpcUaProfile
    | RfidReaderProfile
    | SerialScannerProfile
    | WedgeScannerProfile,
    Field(discriminator="protocol"),
]
PROTOCOLS = ("modbus_tcp", "modbus_rtu", "opcua", "rfid_serial", "scanner_serial", "scanner_wedge")


class _ProfileDocument(BaseModel):
    profile: DeviceProfile


class ProfileError(ValueError):
    """A profile file that cannot be used; `problems` lists `path: message` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc[1:]:  # loc[0] is the wrapper field
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in PROTOCOLS:
            continue  # the discriminator's branch name is noise to a technician
        else:
            out += f".{part}" if out else str(part)
    return out or "(profile)"


def parse_profile(data: object, source: str = "<profile>") -> DeviceProfile:
    try:
        return _ProfileDocument.model_validate({"profile": data}).profile
    except ValidationError as err:
        # Report in the order of the technician's file, not of the model's fields.
        order = list(data) if isinstance(data, dict) else []

        def position(e: Any) -> int:
            key = next((p for p in e["loc"][1:] if p not in PROTOCOLS), None)
            return order.index(key) if key in order else len(order)

        problems = []
        for e in sorted(err.errors(), key=position):
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key: remove it or check its spelling"
            elif e["type"] == "union_tag_invalid":
                ctx = e.get("ctx", {})
                problems.append(
                    f"protocol: unknown protocol {ctx.get('tag')!r}: "
                    f"use one of {ctx.get('expected_tags')}"
                )
                continue
            problems.append(f"{_location(e['loc'])}: {msg}")
        raise ProfileError(source, problems) from err


class UnreadableYaml(Exception):
    """A technician's YAML file (a profile, a site file) that cannot be read as YAML; the
    message says why and what to do."""


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; UnreadableYaml whatever PyYAML or the file throws."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UnreadableYaml(f"cannot read the file: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise UnreadableYaml(
            f"not UTF-8 text (byte {err.start}): save the file as UTF-8 in the editor"
        ) from err
    except yaml.YAMLError as err:
        raise UnreadableYaml(f"not valid YAML: {err}") from err
    except ValueError as err:  # PyYAML builds 2020-13-45 as a date and lets that fail
        raise UnreadableYaml(f"not valid YAML: a value is no date ({err})") from err
    except RecursionError as err:  # PyYAML's composer recurses once per nesting level
        raise UnreadableYaml("not valid YAML: nested too deeply") from err


def load_profile(path: Path) -> DeviceProfile:
    try:
        data = read_yaml(path)
    except UnreadableYaml as err:
        raise ProfileError(str(path), [str(err)]) from err
    profile = parse_profile(data, str(path))
    if isinstance(profile, OpcUaProfile):
        profile = _certificates_beside(profile, path.parent)
    return profile


def _certificates_beside(profile: OpcUaProfile, folder: Path) -> OpcUaProfile:
    """Relative certificate paths are relative to the profile's own folder, not to wherever
    the edge happens to be started from."""
    security = profile.connection.security
    resolved = {
        key: folder / value
        for key in ("certificate", "private_key", "server_certificate")
        if (value := getattr(security, key)) is not None and not value.is_absolute()
    }
    if not resolved:
        return profile
    connection = profile.connection.model_copy(
        update={"security": security.model_copy(update=resolved)}
    )
    return profile.model_copy(update={"connection": connection})


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of a profile file (committed as profile.schema.json)."""
    schema = TypeAdapter(DeviceProfile).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Device profile, version 1"
    return schema

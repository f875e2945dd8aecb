"""The device profile format, version 1, assembled from the installed protocols.

Strict on purpose: an unknown key is an error naming its path, so a typo never turns into
a silently ignored setting. Versioned by `profile_version`; a future version 2 comes with
an explicit migration, never a second dialect read side by side.

Each protocol's folder holds its profile model (`protocols/<name>/profile.py`) and registers
it (`protocols/installed.py`); this module names no protocol, it reads the registry. The
models are re-exported here, the one place the edge and the CLI import them from.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from protocols.installed import REGISTRY
from protocols.modbus.profile import (
    REGISTER_COUNT,
    ModbusProfile,
    ModbusRtuConnection,
    ModbusRtuProfile,
    ModbusTag,
    ModbusTcpConnection,
    ModbusTcpProfile,
)
from protocols.opcua.profile import (
    Deadband,
    OpcUaConnection,
    OpcUaProfile,
    OpcUaSecurity,
    OpcUaTag,
)
from protocols.profile import (
    BatchSource,
    Name,
    ProfileBase,
    RefersToFiles,
    SerialPort,
    SpecLimits,
    Strict,
)
from protocols.registry import Registry
from protocols.rfid.profile import RfidAntenna, RfidReaderProfile
from protocols.scanner.profile import (
    ScanMeaning,
    ScannerProfile,
    ScanRule,
    SerialScannerProfile,
    WedgeInput,
    WedgeScannerProfile,
)

__all__ = [
    "PROTOCOLS",
    "REGISTER_COUNT",
    "BatchSource",
    "Deadband",
    "DeviceProfile",
    "ModbusProfile",
    "ModbusRtuConnection",
    "ModbusRtuProfile",
    "ModbusTag",
    "ModbusTcpConnection",
    "ModbusTcpProfile",
    "Name",
    "OpcUaConnection",
    "OpcUaProfile",
    "OpcUaSecurity",
    "OpcUaTag",
    "ProfileBase",
    "ProfileError",
    "RfidAntenna",
    "RfidReaderProfile",
    "ScanMeaning",
    "ScanRule",
    "ScannerProfile",
    "SerialPort",
    "SerialScannerProfile",
    "SpecLimits",
    "Strict",
    "UnreadableYaml",
    "WedgeInput",
    "WedgeScannerProfile",
    "json_schema",
    "load_profile",
    "parse_profile",
    "read_yaml",
]


def profile_union(registry: Registry) -> Any:
    """Every registered profile model, told apart by its `protocol` key."""
    models = tuple(entry.profile for entry in registry)
    return Annotated[Union[models], Field(discriminator="protocol")]  # noqa: UP007


if TYPE_CHECKING:
    # To a type checker a profile is its common base; code that needs a protocol's own
    # settings narrows with isinstance (or a capability of protocols.profile).
    DeviceProfile: TypeAlias = ProfileBase
else:
    DeviceProfile = profile_union(REGISTRY)
PROTOCOLS = REGISTRY.names()


class _ProfileDocument(BaseModel):
    # The wrapper puts the profile under one key, so error locations start with it.
    profile: ProfileBase


@functools.cache
def _document(registry: Registry) -> type[_ProfileDocument]:
    return create_model(
        "_ProfileDocument",
        __base__=_ProfileDocument,
        profile=(profile_union(registry), ...),
    )


class ProfileError(ValueError):
    """A profile file that cannot be used; `problems` lists `path: message` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _location(loc: tuple[int | str, ...], protocols: tuple[str, ...]) -> str:
    out = ""
    for part in loc[1:]:  # loc[0] is the wrapper field
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in protocols:
            continue  # the discriminator's branch name is noise to a technician
        else:
            out += f".{part}" if out else str(part)
    return out or "(profile)"


def parse_profile(
    data: object, source: str = "<profile>", registry: Registry = REGISTRY
) -> DeviceProfile:
    protocols = registry.names()
    try:
        return _document(registry).model_validate({"profile": data}).profile
    except ValidationError as err:
        # Report in the order of the technician's file, not of the model's fields.
        order = list(data) if isinstance(data, dict) else []

        def position(e: Any) -> int:
            key = next((p for p in e["loc"][1:] if p not in protocols), None)
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
            problems.append(f"{_location(e['loc'], protocols)}: {msg}")
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


def load_profile(path: Path, registry: Registry = REGISTRY) -> DeviceProfile:
    try:
        data = read_yaml(path)
    except UnreadableYaml as err:
        raise ProfileError(str(path), [str(err)]) from err
    profile = parse_profile(data, str(path), registry)
    if isinstance(profile, RefersToFiles):
        resolved: DeviceProfile = profile.files_beside(path.parent)
        return resolved
    return profile


def json_schema(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The published JSON Schema of a profile file (committed as profile.schema.json)."""
    schema: dict[str, Any] = TypeAdapter(profile_union(registry)).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Device profile, version 1"
    return schema

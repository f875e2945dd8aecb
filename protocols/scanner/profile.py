"""The barcode scanner profile models (serial, keyboard wedge) and their scan rules."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from protocols.profile import ProfileBase, SerialPort, Strict

ScanMeaning = Literal[
    "batch_start",  # a work order / batch label at a line: the line starts that batch
    "batch_end",  # the batch's end label (or the same batch label scanned again)
    "consume",  # an input lot or unit loaded into the active batch
    "produce",  # an output lot or unit the active batch made
    "operator",  # an operator badge: who does what follows
    "document",  # a purchase order or shipment document: binds a dock door to it
    "receive",  # a unit or lot received at a dock door
    "ship",  # a unit or lot loaded at a dock door
    "place",  # a bin, rack or lane label: the warehouse station works there from now on
    "stock",  # a unit or lot put away, moved, picked or counted at a warehouse station
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


class ScannerProfileBase(ProfileBase):
    terminator: Literal["\r", "\n", "\r\n"] = "\r"
    rules: list[ScanRule] = Field(min_length=1)


class SerialScannerProfile(ScannerProfileBase):
    protocol: Literal["scanner_serial"]
    connection: SerialPort


class WedgeScannerProfile(ScannerProfileBase):
    protocol: Literal["scanner_wedge"]
    connection: WedgeInput


ScannerProfile = SerialScannerProfile | WedgeScannerProfile

"""Binds what the line captures to its active batch and appends it to the outbox.

The batch of a reading is decided here, when it is taken, from the line's active batch:
never guessed later. A device's batch-source tag (a PLC batch number or id) is not a
reading: its changes start and end batches.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from edge_agent.batch_context import ActiveBatch, BatchContext
from edge_agent.batch_numbers import BatchNumbers, NoNumberingRule
from edge_agent.outbox import EVENTS, READINGS, Outbox
from edge_agent.records import (
    UNNUMBERED,
    CheckedReading,
    ReadingForm,
    RecordRefused,
    TakenAt,
    contract_checked,
)
from protocols.driver import Sample
from protocols.mqtt.contract import EARLIEST, LATEST, BatchEvent, DeviceEvent, Name
from protocols.profile import BatchSource

log = logging.getLogger(__name__)

NAME: TypeAdapter[str] = TypeAdapter(Name)
DETAIL_CHARS = 500  # the contract's Detail
NAME_CHARS = 128  # the contract's Name
BatchEventKind = Literal["batch_started", "batch_ended"]
# Sets of reading forms kept (one per line, batch and device) before all are made anew.
MAX_FORM_SETS = 1000


def captured_name(text: str) -> str:
    """Text a device gave (a PLC string, a scan), as a name: control characters removed
    (the NUL padding of a PLC string, a scanner's GS separators and line ends), whitespace
    trimmed."""
    if text.isprintable():
        return text.strip()
    return "".join(c for c in text if unicodedata.category(c) != "Cc").strip()


def storable_detail(text: str | None) -> str | None:
    """A device's own words (an error, a status text) as the contract's Detail: no NUL, no
    lone surrogate, at most 500 characters."""
    if text is None:
        return None
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


def name_problem(value: str) -> str | None:
    """Why the contract refuses `value` as a name (batch id, operator), or None."""
    try:
        NAME.validate_python(value)
    except ValidationError as err:
        return "; ".join(e["msg"] for e in err.errors(include_url=False))
    return None


@dataclass
class Refusals:
    """Captured values the contract refused (never sent), per device."""

    count: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    _logged: set[tuple[str, str]] = field(default_factory=set)

    def add(self, device: str, what: str, problem: str) -> None:
        self.count[device] = self.count.get(device, 0) + 1
        self.last[device] = f"{what}: {problem}"[:1000]
        if (device, what) not in self._logged:  # once per tag: a bad tag polls every second
            self._logged.add((device, what))
            log.error(
                "%s: %s refused, not captured: %s; further refusals of it are only counted "
                "(status: devices.%s.refused)",
                device,
                what,
                problem,
                device,
            )


@dataclass(frozen=True)
class BatchTag:
    tag: str
    prefix: str = ""
    # The value only says that a batch runs: the line's numbering rule makes each id.
    numbered: bool = False

    @classmethod
    def of(cls, source: BatchSource) -> BatchTag:
        return cls(source.tag, source.prefix, source.numbered)

    def batch_id(self, sample: Sample) -> str | None:
        """The batch the tag names, or None for idle (empty, 0) or an unusable value."""
        if sample.quality == "bad":
            return None
        if sample.text is not None:
            text = captured_name(sample.text)
            return text or None
        if sample.value is None or sample.value == 0:
            return None
        number = int(sample.value) if float(sample.value).is_integer() else sample.value
        return f"{self.prefix}{number}"


class Binder:
    def __init__(
        self,
        context: BatchContext,
        outbox: Outbox,
        batch_tags: dict[str, BatchTag] | None = None,
        numbers: BatchNumbers | None = None,
    ) -> None:
        if context.store is not outbox.store:
            raise ValueError(
                "the batch context and the outbox must be kept in one EdgeStore: a batch "
                "change and its event commit together"
            )
        self.context = context
        self.outbox = outbox
        # One transaction for a batch change and its events (a rollback reloads the
        # context's memory too).
        self.store = outbox.store
        self.batch_tags = batch_tags or {}  # device name -> its batch-source tag
        # The lines' numbering rules, for a batch started without an id.
        self.numbers = numbers or BatchNumbers(self.store)
        self.refusals = Refusals()
        # The last value of each run tag (BatchTag.numbered), per (line, device).
        self._run_values: dict[tuple[str, str], str | None] = {}
        # What one tag's readings share, checked once: per (line, batch, device), per
        # (tag, unit). A refused form is kept too, so that a bad tag costs one check.
        self._forms: dict[
            tuple[str, str | None, str],
            dict[tuple[str, str | None], ReadingForm | RecordRefused],
        ] = {}
        # Called (line, batch, started_at, ended_at) inside the transaction that ends a
        # batch: the stations add the batch's TransformationEvent there.
        self.on_batch_end: Callable[[str, str, datetime, datetime], None] | None = None

    def readings(self, line_id: str, device: str, samples: list[Sample], taken_at: datetime) -> int:
        """Bind one poll (or one notification) and commit it to the outbox as a whole."""
        batch_tag = self.batch_tags.get(device)
        if batch_tag is not None:
            for sample in samples:
                if sample.tag == batch_tag.tag:
                    self._follow_batch_tag(line_id, device, batch_tag, sample, taken_at)
            samples = [s for s in samples if s.tag != batch_tag.tag]
        active = self.context.active(line_id)
        batch = active.batch_id if active else None
        forms = self._forms.get((line_id, batch, device))
        if forms is None:
            forms = self._forms_of(line_id, batch, device)
        taken = TakenAt(taken_at)
        records: list[tuple[str, CheckedReading]] = []
        for s in samples:
            try:
                form = forms.get((s.tag, s.unit))
                if form is None:
                    form = forms[(s.tag, s.unit)] = _form(line_id, batch, device, s.tag, s.unit)
            except TypeError:  # a tag or unit that is not even text: the model says why
                form = _form(line_id, batch, device, s.tag, s.unit)
            if isinstance(form, RecordRefused):
                self.refusals.add(device, f"reading of {s.tag}", str(form))
                continue
            try:
                reading = form.at_a_glance(taken, s.value, s.quality, s.device_time, s.detail)
                if reading is None:
                    s = _usable(s)
                    reading = form.reading(taken, s.value, s.quality, s.device_time, s.detail)
            except RecordRefused as refused:  # left out, counted: the rest of the poll is kept
                self.refusals.add(device, f"reading of {s.tag}", str(refused))
                continue
            records.append((READINGS, reading))
        seqs = self.outbox.append_many(records)
        return len(seqs) - seqs.count(-1)  # -1: refused by the drop_newest policy

    def _forms_of(
        self, line_id: str, batch: str | None, device: str
    ) -> dict[tuple[str, str | None], ReadingForm | RecordRefused]:
        """The forms of a device's tags in a batch (made as its tags are first read)."""
        if len(self._forms) >= MAX_FORM_SETS:  # a bound: batches come and go for years
            self._forms.clear()
        forms = self._forms[(line_id, batch, device)] = {}
        return forms

    def _follow_batch_tag(
        self, line_id: str, device: str, tag: BatchTag, sample: Sample, at: datetime
    ) -> None:
        if tag.numbered:
            self._follow_run_tag(line_id, device, tag, sample, at)
            return
        wanted = tag.batch_id(sample)
        active = self.context.active(line_id)
        if (active.batch_id if active else None) == wanted or sample.quality == "bad":
            return  # no change, or the PLC value is unusable: keep the line as it is
        if wanted is not None and (problem := name_problem(wanted)):
            # Unusable too: the line keeps its batch, and someone is told which tag to fix.
            self.refusals.add(device, f"batch id {wanted[:40]!r} from tag {tag.tag}", problem)
            return
        by = f"plc:{device}/{tag.tag}"[:NAME_CHARS]
        try:
            if active is not None:
                self.end_batch(line_id, by, at)
            if wanted is not None:
                self.start_batch(line_id, wanted, by, at)
        except RecordRefused as err:  # e.g. the batch's genealogy: never stops the device loop
            self.refusals.add(device, f"batch change to {wanted!r} from tag {tag.tag}", str(err))

    def _follow_run_tag(
        self, line_id: str, device: str, tag: BatchTag, sample: Sample, at: datetime
    ) -> None:
        """A run bit or a PLC counter: a new value that is not idle starts a batch numbered
        by the line's rule (ending the one before), idle ends it. After a restart the first
        value read is taken as the running batch's, not as a new one."""
        if sample.quality == "bad" or (
            isinstance(sample.value, float) and not math.isfinite(sample.value)
        ):
            return  # unusable: the line stays as it is
        value = tag.batch_id(sample)
        key = (line_id, device)
        known = key in self._run_values
        if known and self._run_values[key] == value:
            return
        self._run_values[key] = value
        active = self.context.active(line_id)
        if not known and (active is not None) == (value is not None):
            return  # running and a batch is active, or idle and none is: as it was
        by = f"plc:{device}/{tag.tag}"[:NAME_CHARS]
        try:
            with self.store.transaction():
                if active is not None:
                    self.end_batch(line_id, by, at)
                if value is not None:
                    self.start_batch(line_id, None, by, at)
        except (RecordRefused, NoNumberingRule) as err:  # never stops the device loop
            self.refusals.add(device, f"batch start by rule from tag {tag.tag}", str(err))

    def start_batch(
        self, line_id: str, batch_id: str | None, by: str, at: datetime | None = None
    ) -> ActiveBatch:
        """Start a batch; without an id, the line's numbering rule makes one (NoNumberingRule
        if it has none), in the same transaction as the start and its event."""
        at = at or datetime.now(UTC)
        with self.store.transaction():
            if batch_id is None:
                self.context.check_idle(line_id)  # before a number is taken for nothing
                batch_id = self.numbers.next_id(line_id, at)
                by_rule = True
            else:
                by_rule = False
            batch = self.context.start(line_id, batch_id, by, at)
            self._event("batch_started", batch, at, by, numbered_by_rule=by_rule)
        return batch

    def end_batch(self, line_id: str, by: str, at: datetime | None = None) -> ActiveBatch:
        at = at or datetime.now(UTC)
        with self.store.transaction():
            batch = self.context.end(line_id, by)
            self._event("batch_ended", batch, at, by)
            if self.on_batch_end is not None:
                self.on_batch_end(line_id, batch.batch_id, batch.started_at, at)
        return batch

    def device_event(self, line_id: str, device: str, online: bool, detail: str | None) -> None:
        with contract_checked("device_online" if online else "device_offline"):
            event = DeviceEvent(
                seq=UNNUMBERED,
                kind="device_online" if online else "device_offline",
                time=datetime.now(UTC),
                line=line_id,
                device=device,
                detail=storable_detail(detail),
            )
        self.outbox.append(EVENTS, event)

    def _event(
        self,
        kind: BatchEventKind,
        batch: ActiveBatch,
        at: datetime,
        by: str,
        numbered_by_rule: bool = False,
    ) -> None:
        with contract_checked(kind):
            event = BatchEvent(
                seq=UNNUMBERED,
                kind=kind,
                time=at,
                line=batch.line_id,
                batch=batch.batch_id,
                by=by,
                numbered_by_rule=numbered_by_rule,
            )
        self.outbox.append(EVENTS, event)


def _form(
    line_id: str, batch: str | None, device: str, tag: str, unit: str | None
) -> ReadingForm | RecordRefused:
    try:
        return ReadingForm(line_id, batch, device, tag, unit)
    except RecordRefused as refused:
        return refused


def _usable(sample: Sample) -> Sample:
    """A sample as the contract can carry it: a value that is not a finite number is no
    value (bad quality), a device clock outside the contract's years is dropped (the
    reading keeps the edge's time, flagged uncertain), a detail is made storable. A field
    of the wrong type is left as it is, for the Reading model to refuse by name."""
    value, device_time, detail = sample.value, sample.device_time, sample.detail
    finite = not isinstance(value, float) or math.isfinite(value)
    in_years = not isinstance(device_time, datetime) or (
        device_time.tzinfo is not None and EARLIEST <= device_time < LATEST
    )
    if finite and in_years and not isinstance(detail, str):
        return sample
    quality = sample.quality
    if not finite:
        value, quality = None, "bad"
        detail = f"the device gave {sample.value!r}, not a finite number"
    if not in_years:
        assert device_time is not None
        detail = (
            f"device clock says {device_time.isoformat()}, outside {EARLIEST.year}-"
            f"{LATEST.year - 1}: check the device's clock"
            + (f"; {detail}" if isinstance(detail, str) and detail else "")
        )
        device_time = None
        if quality == "good":
            quality = "uncertain"
    if isinstance(detail, str):
        detail = storable_detail(detail)
    return Sample(sample.tag, value, sample.unit, quality, device_time, detail, sample.text)

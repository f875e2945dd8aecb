"""`tracectl trace|recall|batches|edges|export fsma` against the running collector: human
tables and trees by default, the API's JSON with --json, a file with a progress line for
exports; and one clear line, never a traceback, when the key is missing, refused or of the
wrong role, or the API unreachable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from cloud_collector.auth import Role
from tests.cloud_collector.pages.seed import seed
from tests.cloud_collector.plant import (
    BREAD_GTIN,
    DOUGH_GTIN,
    FLOUR_GTIN,
    T0,
    Plant,
    bakery,
    lot_item,
)
from tests.conftest import RunningCollector, Services, free_port
from tracectl.__main__ import main
from tracectl.tables import plant_zone

__all__ = ["bakery"]  # the fixture, shared with the trace API's tests


class Run:
    """tracectl as a user runs it: its exit status, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            await asyncio.to_thread(main, list(args))
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        out, err = self.capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err


@pytest.fixture
def tracectl(
    collector: RunningCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("TRACE_API_URL", collector.api_url)
    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.reader])
    return Run(capsys)


async def test_trace_backward_is_a_tree_to_the_supplier_receipts(
    bakery: Plant, tracectl: Run
) -> None:
    p = bakery
    code, out, _ = await tracectl("trace", f"01/{BREAD_GTIN}/10/{p.lot('BREAD')}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"backward trace of 01/{BREAD_GTIN}/10/{p.lot('BREAD')}:"
    assert lines[1].startswith(f"lot {p.lot('BREAD')}, GTIN {BREAD_GTIN}, 600 EA")
    assert lines[2].startswith(f"└─ batch B2-{p.tag} on line-1")
    assert lines[3].startswith(f"   └─ lot {p.lot('DOUGH')}")
    assert lines[4].startswith(f"      └─ batch B1-{p.tag}")
    flour = next(i for i, line in enumerate(lines) if f"lot {p.lot('FLOUR')}" in line)
    assert "received from a supplier" in lines[flour]
    assert f"└─ received PO-{p.tag} at dock-1" in lines[flour + 1]
    assert lines[flour + 1].endswith("1,000 KGM")


async def test_trace_forward_marks_the_rework_loop(bakery: Plant, tracectl: Run) -> None:
    p = bakery  # bread is reworked into dough: DOUGH -> BREAD -> DOUGH
    await p.post(
        p.batch(
            f"RW-{p.tag}",
            [lot_item(BREAD_GTIN, p.lot("BREAD"), 10, "EA")],
            [lot_item(DOUGH_GTIN, p.lot("DOUGH"))],
        )
    )
    code, out, _ = await tracectl("trace", f"01/{DOUGH_GTIN}/10/{p.lot('DOUGH')}", "--forward")
    assert code == 0
    assert f"↻ lot {p.lot('DOUGH')} (a loop: above)" in out
    assert f"shipped SH-1-{p.tag}" in out and f"shipped SH-2-{p.tag}" in out
    assert "reaches itself" in out  # the API's gap, listed


async def test_recall_as_a_table_and_as_the_api_s_json(
    bakery: Plant, tracectl: Run, collector: RunningCollector
) -> None:
    p = bakery
    lot = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
    code, out, _ = await tracectl("recall", lot)
    assert code == 0
    assert out.splitlines()[0].endswith("4 lot(s) affected")
    header = next(line for line in out.splitlines() if line.startswith("LOT "))
    assert header.split() == [
        "LOT", "GTIN", "STATUS", "WHERE", "/", "CUSTOMER", "ORDER", "SHIPMENT", "QUANTITY", "AS"
    ]  # fmt: skip
    assert any(
        line.startswith(p.lot("BREAD")) and "shipped" in line and "600 EA" in line
        for line in out.splitlines()
    )
    code, out, _ = await tracectl("recall", lot, "--json")
    async with collector.client(Role.reader) as api:
        expected = (await api.get(f"/api/v1/lots/{lot}/recall")).json()
    assert json.loads(out) == expected


async def test_recall_by_condition_says_how_to_ask(tracectl: Run) -> None:
    code, _, err = await tracectl("recall", "--condition", "temperature", "above", "--from", "x")
    assert code == 1
    assert "--from and --to" in err
    code, _, err = await tracectl(
        "recall",
        "--condition",
        "temperature",
        "above",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
    )
    assert code == 1 and "needs a number" in err
    code, out, _ = await tracectl(
        "recall",
        "--condition",
        "no-such-tag",
        "above",
        "80",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
    )
    assert code == 0 and "no-such-tag was above 80.0" in out and ": 0" in out


async def test_export_fsma_saves_the_whole_file_with_progress(
    bakery: Plant,
    tracectl: Run,
    collector: RunningCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = bakery
    monkeypatch.chdir(tmp_path)
    lot = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
    code, out, err = await tracectl("export", "fsma", lot, "--recall", "--progress")
    assert code == 0
    (saved,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.csv")))
    assert saved.name == f"fsma204-recall-{p.lot('FLOUR')}.csv"
    async with collector.client(Role.reader) as api:
        expected = (await api.get(f"/api/v1/fsma204/lots/{lot}/recall")).content
    assert saved.read_bytes() == expected
    rows = expected.count(b"\n")
    assert f"saved {saved.name} ({rows} lines)" in out
    assert f"{rows:10,} rows" in err  # the progress line's last state
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*.part")))

    code, _, err = await tracectl("export", "fsma", lot, "--recall")
    assert code == 1 and "exists" in err and "--force" in err
    code, _, err = await tracectl("export", "fsma", lot, "--format", "xlsx", "-o", "r.xlsx")
    assert code == 0 and (tmp_path / "r.xlsx").read_bytes()[:2] == b"PK"
    code, _, err = await tracectl("export", "fsma", "--product", FLOUR_GTIN)
    assert code == 1 and "--from and --to" in err


async def test_batches_of_a_line(bakery: Plant, tracectl: Run) -> None:
    code, out, _ = await tracectl("batches", "--line", "line-1", "--limit", "1000")
    assert code == 0
    assert f"B1-{bakery.tag}" in out and out.splitlines()[0].split()[:2] == ["BATCH", "LINE"]
    code, out, _ = await tracectl("batches", "--line", "no-such-line")
    assert code == 0 and out.strip() == "no batches match"
    code, _, err = await tracectl("batches", "--since", "yesterday")
    assert code == 1 and "not a date" in err


@pytest.fixture
def plant_in_los_angeles(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZoneInfo]:
    """The plant's zone (the pages' setting) eight hours behind UTC: the bakery's T0, 06:00
    UTC on the 20th, is 22:00 on the 19th there."""
    monkeypatch.setenv("TRACE_PLANT_TIMEZONE", "America/Los_Angeles")
    plant_zone.cache_clear()
    yield ZoneInfo("America/Los_Angeles")
    plant_zone.cache_clear()


async def test_batches_are_filtered_by_the_api_in_the_plant_s_days(
    services: Services, collector: RunningCollector, tracectl: Run, plant_in_los_angeles: ZoneInfo
) -> None:
    seeded = await seed(services, collector)  # B1 ran out of its limits; B1 and RW made dough
    b1, b2, b3, rw = (seeded.batch(n) for n in ("B1", "B2", "B3", "RW"))
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        # As a line's batch start would set it (the events alone leave it open).
        await conn.execute(
            "update batches set started_at = %s where batch_id = any(%s)", (T0, [b1, b2, b3, rw])
        )
        await conn.commit()

    async def listed(*options: str) -> set[str]:
        code, out, err = await tracectl("batches", "--limit", "1000", *options)
        assert code == 0, err
        return {line.split()[0] for line in out.splitlines()[1:-1]}

    assert {b1, rw} <= await listed("--product", DOUGH_GTIN)
    assert not {b2, b3} & await listed("--product", DOUGH_GTIN)
    excursions = await listed("--excursion", "--line", "line-1")
    assert b1 in excursions and not {b2, b3, rw} & excursions
    # Whole days of the plant: its batches began on the 19th in Los Angeles (the 20th in UTC).
    assert {b1, b2, b3, rw} <= await listed("--from", "2026-11-19", "--to", "2026-11-19")
    assert not {b1, b2, b3, rw} & await listed("--from", "2026-11-20")
    code, out, _ = await tracectl("batches", "--product", DOUGH_GTIN, "--excursion")
    row = next(line for line in out.splitlines() if line.startswith(b1))
    assert "2026-11-19 22:00:00 PST" in row  # T0 in the plant's zone, the zone named
    assert "times in America/Los_Angeles (TRACE_PLANT_TIMEZONE)" in out.splitlines()[-1]
    code, out, _ = await tracectl("batches", "--product", DOUGH_GTIN, "--excursion", "--json")
    assert [b["batch_id"] for b in json.loads(out) if b["batch_id"] == b1] == [b1]
    assert next(b for b in json.loads(out) if b["batch_id"] == b1)["excursions"] > 0
    code, _, err = await tracectl("batches", "--to", "the 19th")
    assert code == 1 and "--to 'the 19th' is not a date" in err


async def test_export_fsma_dates_default_to_the_plant_s_zone(
    bakery: Plant,
    tracectl: Run,
    collector: RunningCollector,
    tmp_path: Path,
    plant_in_los_angeles: ZoneInfo,
) -> None:
    lot = f"01/{FLOUR_GTIN}/10/{bakery.lot('FLOUR')}"
    code, _, err = await tracectl("export", "fsma", lot, "--recall", "-o", str(tmp_path / "r.csv"))
    assert code == 0, err
    async with collector.client(Role.reader) as api:
        path = f"/api/v1/fsma204/lots/{lot}/recall"
        there = (await api.get(path, params={"tz": "America/Los_Angeles"})).content
        utc = (await api.get(path, params={"tz": "UTC"})).content
    assert there != utc  # the receipt's day is the 19th there, the 20th in UTC
    assert (tmp_path / "r.csv").read_bytes() == there
    code, _, err = await tracectl(
        "export", "fsma", lot, "--recall", "--tz", "UTC", "-o", str(tmp_path / "u.csv")
    )
    assert code == 0 and (tmp_path / "u.csv").read_bytes() == utc


async def test_a_plant_zone_that_is_none_is_one_line_with_the_fix(
    tracectl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACE_PLANT_TIMEZONE", "Mars/Olympus_Mons")
    plant_zone.cache_clear()
    try:
        code, _, err = await tracectl("batches")
    finally:
        monkeypatch.undo()
        plant_zone.cache_clear()
    assert code == 1 and "TRACE_PLANT_TIMEZONE 'Mars/Olympus_Mons' is not a time zone" in err


async def test_edges_lists_the_fleet(
    services: Services, tracectl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = f"edge-{free_port()}"
    await services.register(edge)
    code, out, _ = await tracectl("edges")
    assert code == 0
    assert any(line.split()[:2] == [edge, "UNKNOWN"] for line in out.splitlines())
    code, out, _ = await tracectl("edges", edge)
    assert code == 0 and out.startswith(f"edge {edge}: unknown (never heard from)")
    code, out, _ = await tracectl("edges", "--json")
    body: dict[str, Any] = json.loads(out)
    assert edge in [e["edge_id"] for e in body["edges"]]
    code, _, err = await tracectl("edges", "no-such-edge")
    assert code == 1 and "answered 404" in err and "tracectl edge add" in err


async def test_every_failure_is_one_line_with_the_fix(
    tracectl: Run, collector: RunningCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACE_API_KEY")
    monkeypatch.setenv("TRACE_ENV_FILE", "/nonexistent")
    for command in (["edges"], ["trace", "X"], ["recall", "X"], ["batches"], ["parameters", "X"]):
        code, _, err = await tracectl(*command)
        assert code == 1 and "TRACE_API_KEY is not set" in err
        assert "tracectl credential add" in err

    monkeypatch.setenv("TRACE_API_KEY", "lt_not-a-key-of-ours")
    code, _, err = await tracectl("edges")
    assert code == 1 and "refused the key in TRACE_API_KEY" in err

    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.importer])
    code, _, err = await tracectl("trace", "X")
    assert code == 1 and "may not do this" in err and "role reader" in err

    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.reader])
    code, _, err = await tracectl("trace", "NO-SUCH-LOT-ANYWHERE")
    assert code == 1 and "answered 404" in err

    monkeypatch.setenv("TRACE_API_URL", f"http://127.0.0.1:{free_port()}")
    code, _, err = await tracectl("export", "fsma", "X")
    assert code == 1 and "cannot reach the collector's API" in err and "TRACE_API_URL" in err

"""`tracectl recall case ...` against the running collector: a drill from the command line
saves the complete export and says how long it took; a case is shown, recorded on and
closed as a quality person would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud_collector.auth import Role
from tests.cloud_collector.plant import BREAD_GTIN, FLOUR_GTIN, Plant, bakery, erp
from tests.conftest import RunningCollector
from tests.tracectl.test_collector_commands import Run

__all__ = ["bakery"]  # the fixture, shared with the trace API's tests


@pytest.fixture
def quality(
    collector: RunningCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("TRACE_API_URL", collector.api_url)
    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.quality])
    return Run(capsys)


async def test_a_drill_saves_the_export_and_reports_its_time(
    bakery: Plant, quality: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lot = f"01/{FLOUR_GTIN}/10/{bakery.lot('FLOUR')}"
    code, out, err = await quality("recall", "case", "drill", lot, "--title", "Q4 drill")
    assert code == 0, err
    (saved,) = await asyncio.to_thread(lambda: list(tmp_path.glob("recall-case-*.xlsx")))
    assert saved.read_bytes()[:2] == b"PK"
    assert f"saved {saved.name}" in out
    assert "time from opening to the complete FSMA 204 export" in out
    assert "within the 24 hours" in out
    case_id = saved.stem.removeprefix("recall-case-")
    code, out, _ = await quality("recall", "case", "list", "--drills")
    assert code == 0 and any(line.split()[:2] == [case_id, "drill"] for line in out.splitlines())


async def test_a_case_is_opened_recorded_on_and_closed(
    bakery: Plant, quality: Run, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    lot = f"01/{BREAD_GTIN}/10/{p.lot('BREAD')}"
    code, out, err = await quality("recall", "case", "open", lot, "--title", "bread", "--json")
    assert code == 0, err
    case_id = out.split('"case_id": ')[1].split(",")[0]
    customer = f"C1-{p.tag}"
    code, out, err = await quality(
        "recall", "case", "notify", case_id, customer, "--by", "QA lead", "--method", "email"
    )
    assert code == 0, err
    assert "Bakery Co" in out and "NOT YET" not in out
    code, out, err = await quality("recall", "case", "return", case_id, customer, "600", "EA")
    assert code == 0 and "600 EA" in out, err
    code, out, err = await quality(
        "recall", "case", "notify", case_id, "ACME", "--by", "x", "--method", "fax"
    )
    assert code == 1 and "has no customer 'ACME'" in err
    code, out, err = await quality("recall", "case", "close", case_id, "--summary", "all back")
    assert code == 0 and "[closed]" in out and "all back" in out, err

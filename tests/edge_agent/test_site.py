"""Site files are validated whole before any device is opened; every problem is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_profiles import LIBRARY
from device_profiles.sites import WarehouseWork, bundle_site_file, resolve_site, site_changes
from edge_agent.reconfigure import running_site, site_of
from edge_agent.site import SiteError, load_site

PROFILE = str(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")


def site(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_the_demo_site_loads() -> None:
    loaded = load_site(Path(__file__).parents[2] / "deploy" / "demo" / "site.yaml")
    assert loaded.edge_id == "demo-edge" and [p.name for p in loaded.devices["line-1"]] == [
        "tp-controller-1"
    ]


def test_connection_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    ok = load_site(
        site(
            tmp_path,
            {
                "edge_id": "e",
                "lines": [
                    {
                        "id": "l",
                        "devices": [
                            {"profile": PROFILE, "connection": {"host": "10.0.0.5", "port": 502}}
                        ],
                    }
                ],
            },
        )
    )
    conn = ok.devices["l"][0].connection
    assert (conn.host, conn.port) == ("10.0.0.5", 502)  # type: ignore[union-attr]
    with pytest.raises(
        SiteError, match=r"connection\.port: Input should be less than or equal to 65535"
    ):
        load_site(
            site(
                tmp_path,
                {
                    "edge_id": "e",
                    "lines": [
                        {
                            "id": "l",
                            "devices": [{"profile": PROFILE, "connection": {"port": 70000}}],
                        }
                    ],
                },
            )
        )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SiteError) as err:
        load_site(
            site(
                tmp_path,
                {
                    "edge_id": "e",
                    "lines": [
                        {
                            "id": "l1",
                            "devices": [{"profile": "missing.yaml"}, {"profile": PROFILE}],
                        },
                        {"id": "l2", "devices": [{"profile": PROFILE}]},
                    ],
                },
            )
        )
    problems = err.value.problems
    assert len(problems) == 2
    assert "lines[0].devices[0]" in problems[0] and "cannot read the file" in problems[0]
    assert (
        "lines[1].devices[0]" in problems[1]
        and "device name 'tp-controller-1' is also used" in problems[1]
    )


def test_unknown_keys_in_the_site_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=r"lines\.0\.devicez: Extra inputs are not permitted"):
        load_site(site(tmp_path, {"edge_id": "e", "lines": [{"id": "l", "devicez": []}]}))


def test_an_edge_refuses_to_start_under_another_edges_broker_identity(tmp_path: Path) -> None:
    from edge_agent.runtime import EdgeAgent, EdgeIdentityMismatch
    from edge_agent.settings import EdgeSettings
    from protocols.mqtt.connection import BrokerSettings

    demo = load_site(Path(__file__).parents[2] / "deploy" / "demo" / "site.yaml")
    settings = EdgeSettings(
        state_dir=tmp_path, mqtt=BrokerSettings(username="line-9", password="x")
    )
    with pytest.raises(EdgeIdentityMismatch, match=r"edge_id is 'demo-edge'.*line-9"):
        EdgeAgent(settings, demo)


def test_a_plc_run_tag_on_a_line_without_a_numbering_rule_is_refused(tmp_path: Path) -> None:
    plc = yaml.safe_load((LIBRARY / "opcua-reactor-plc.yaml").read_text())
    plc["batch_source"] = {"tag": "batch_id", "numbered": True}
    (tmp_path / "plc.yaml").write_text(yaml.safe_dump(plc))
    body = {"edge_id": "e", "lines": [{"id": "l", "devices": [{"profile": "plc.yaml"}]}]}
    with pytest.raises(
        SiteError,
        match=r"lines\[0\]\.devices\[0\]: device reactor-plc-1's "
        r"batch_source is numbered, but line l has no numbering rule",
    ):
        load_site(site(tmp_path, body))
    body["lines"][0]["numbering"] = {"pattern": "{line}-{seq}", "sequence": {"reset": "never"}}
    assert load_site(site(tmp_path, body)).numbering["l"].pattern == "{line}-{seq}"


def test_a_docks_trading_parties_are_checked_and_travel_with_a_pushed_site(
    tmp_path: Path,
) -> None:
    us = {"side": "ours", "type": "owning_party", "gln": "0614141000005"}
    door = {"side": "ours", "type": "location", "gln": "0614141000036", "extension": "3"}
    body = {"edge_id": "e", "docks": [{"id": "dock-3", "parties": [us, door]}]}
    loaded = load_site(site(tmp_path, body))
    assert [p.gln for p in loaded.dock_parties["dock-3"]] == [us["gln"], door["gln"]]
    # What runs, in the pushed form and back: the parties come along.
    assert site_of(running_site(loaded)).dock_parties == loaded.dock_parties
    wrong = {
        "edge_id": "e",
        "docks": [{"id": "dock-3", "parties": [us | {"gln": "0614141000006"}]}],
    }
    with pytest.raises(
        SiteError, match=r"docks\.0\.parties\.0\.gln: Value error, 0614141000006 is not a GLN"
    ):
        load_site(site(tmp_path, wrong))


def test_warehouse_stations_take_scanners_and_rfid_readers_and_say_what_they_do(
    tmp_path: Path,
) -> None:
    handheld = {"profile": str(LIBRARY / "scanner-warehouse-handheld.yaml")}
    gate = {"profile": str(LIBRARY / "rfid-dock-door-gate.yaml")}
    controller = {"profile": str(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")}
    picking = {"id": "wh-pick", "step": "pick", "to": "STAGE-1", "devices": [handheld, gate]}
    ok = load_site(site(tmp_path, {"edge_id": "e", "warehouse": [picking]}))
    assert ok.warehouse["wh-pick"].to == "STAGE-1"
    assert [p.name for p in ok.devices["wh-pick"]] == ["wh-handheld-1", "dock-3-rfid-gate"]
    polled = {"id": "w", "step": "move", "devices": [controller]}
    with pytest.raises(SiteError, match=r"warehouse\[0\]\.devices\[0\]: a warehouse station"):
        load_site(site(tmp_path, {"edge_id": "e", "warehouse": [polled]}))
    with pytest.raises(SiteError, match=r"warehouse\.0\.step"):
        load_site(site(tmp_path, {"edge_id": "e", "warehouse": [{"id": "w", "step": "dance"}]}))


def test_a_warehouse_station_goes_through_a_pushed_site_and_back(tmp_path: Path) -> None:
    """The site file bundled for the registry, resolved and run as the edge applies a push,
    and read back as what runs: the station's step, place and destination are kept."""
    handheld = {"profile": str(LIBRARY / "scanner-warehouse-handheld.yaml")}
    station = {"id": "wh-count", "step": "count", "place": "BIN-A-01", "devices": [handheld]}
    path = site(tmp_path, {"edge_id": "e", "warehouse": [station]})
    resolved = resolve_site(bundle_site_file(path))
    running = site_of(resolved)
    assert running.warehouse["wh-count"] == WarehouseWork(step="count", place="BIN-A-01")
    back = running_site(running)
    assert back.document.warehouse[0].step == "count"
    assert back.devices["wh-handheld-1"].kind == "warehouse"
    assert site_changes(resolved, back).lines() == ["no change"]

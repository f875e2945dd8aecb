"""The demo line: a simulated Modbus controller read by a real edge agent, published to
the project's broker, ingested by a collector into TimescaleDB, and read back over the API.

The collector keeps running afterwards so the batch can be looked at; `make stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import yaml

from cloud_collector import auth, broker_identities
from cloud_collector.broker_identities import BrokerFiles, IdentityKind
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings
from device_profiles import LIBRARY
from device_profiles.schema import ModbusTcpProfile, load_profile
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.gs1 import with_check_digit
from protocols.modbus.simulator import ModbusSimulator, run_reactor_process
from protocols.mqtt.connection import BrokerSettings
from protocols.rfid.simulator import RfidReaderSimulator
from protocols.scanner.simulator import ScannerSimulator
from protocols.serial_link import SerialLink
from tracectl.parameters import print_parameters

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TRACE_SERVICES_DIR", ROOT / ".services"))
SITE = ROOT / "deploy" / "demo" / "site.yaml"


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn_collector() -> subprocess.Popen[bytes]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "collector.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_collector", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    (STATE / "collector.pid").write_text(str(proc.pid))
    return proc


async def ensure_collector(settings: CollectorSettings) -> str:
    """A collector answering on the API port: the one already running, or a new one."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    if await _healthy(url):
        return url
    proc = _spawn_collector()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"the collector exited with {proc.returncode}; see {STATE / 'collector.log'}"
            )
        if await _healthy(url):
            return url
        await asyncio.sleep(0.2)
    raise SystemExit(f"the collector did not answer on {url}; see {STATE / 'collector.log'}")


async def demo_edge_identity(database_url: str, edge_id: str) -> BrokerSettings:
    """The demo edge's broker identity, issued afresh each run (the previous run's password
    is revoked), written into the local broker's files, which it then reloads."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        issued = await broker_identities.issue(
            conn, edge_id, IdentityKind.edge, "tracectl demo", rotate=True
        )
        files = BrokerFiles()
        if files.configured:
            await broker_identities.update_broker(conn, files)
        else:
            print(
                "demo: TRACE_BROKER_* unset: the broker's files were not updated "
                "(run `tracectl broker files` where the broker runs)",
                file=sys.stderr,
            )
    return BrokerSettings(username=issued.name, password=issued.password)


async def demo_key(database_url: str) -> str:
    """An admin key for the demo (it imports ERP data and reads traces), named `demo`;
    each run revokes the previous run's."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        issued = await auth.issue(conn, "demo", auth.Role.admin, replace=True)
    return issued.key


def sscc96(sscc: str) -> bytes:
    """The SSCC-96 tag encoding of an SSCC under a 7-digit company prefix (TDS 14.5.2),
    for the simulated pallets' tags."""
    company_prefix, serial_ref = int(sscc[1:8]), int(sscc[0] + sscc[8:17])
    bits = (0x31 << 88) | (5 << 82) | (company_prefix << 58) | (serial_ref << 24)
    return bits.to_bytes(12, "big")


def demo_site(links: dict[str, SerialLink]) -> Path:
    """The demo line PC: the static site plus two dock gates and a line scanner, whose
    serial ports are this run's pseudo-terminals."""
    STATE.mkdir(parents=True, exist_ok=True)
    site = yaml.safe_load(SITE.read_text())
    site["lines"][0]["devices"][0]["profile"] = str(
        LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml"
    )
    site["lines"][0]["devices"].append(
        {
            "profile": str(LIBRARY / "scanner-line-station.yaml"),
            "connection": {"port": links["scanner"].edge_port},
        }
    )
    gate = yaml.safe_load((LIBRARY / "rfid-dock-door-gate.yaml").read_text())
    site["docks"] = []
    for dock in ("dock-1", "dock-2"):
        profile = {
            **gate,
            "name": f"{dock}-gate",
            "window_s": 2.0,
            "antennas": [
                {"port": 1, "read_point": f"{dock}-door", "side": "outside"},
                {"port": 2, "read_point": f"{dock}-door", "side": "inside"},
            ],
        }
        path = STATE / f"demo-{dock}-gate.yaml"
        path.write_text(yaml.safe_dump(profile))
        site["docks"].append(
            {
                "id": dock,
                "devices": [{"profile": str(path), "connection": {"port": links[dock].edge_port}}],
            }
        )
    path = STATE / "demo-site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


async def run_demo(seconds: float) -> None:
    """A day at a small plant, compressed: a supplier pallet is received through the RFID
    gate of dock 1, its lot is consumed into a batch on line 1 while the reactor's
    temperature and pressure are recorded, the batch's output pallet is shipped through
    dock 2; then the trace answers where the output came from and where the flour went."""
    collector = CollectorSettings()
    migrate(collector.database_url)
    api = await ensure_collector(collector)
    key = await demo_key(collector.database_url)
    print(
        f"collector: API on {api}, ingesting from mqtt://{collector.mqtt.host}:{collector.mqtt.port}"
    )

    run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    batch_id, flour_lot = f"WO-{run}", f"FLOUR-{run}"
    supplier_pallet = with_check_digit("3" + "9506000" + run[-9:])
    our_pallet = with_check_digit("1" + "0614141" + run[-9:])
    profile = load_profile(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
    assert isinstance(profile, ModbusTcpProfile)
    async with SerialLink() as dock1, SerialLink() as dock2, SerialLink() as scanner_link:
        links = {"dock-1": dock1, "dock-2": dock2, "scanner": scanner_link}
        site = load_site(demo_site(links))
        edge_broker = await demo_edge_identity(collector.database_url, site.edge_id)
        agent = EdgeAgent(
            EdgeSettings(site=SITE, state_dir=STATE / "demo-edge", mqtt=edge_broker), site
        )
        plc = ModbusSimulator(profile, port=15020)
        gate1 = RfidReaderSimulator("mercury", dock1.device_port)
        gate2 = RfidReaderSimulator("mercury", dock2.device_port)
        scanner = ScannerSimulator(scanner_link.device_port, terminator="\r")
        async with plc, gate1, gate2:
            scanner.start()
            process = asyncio.create_task(run_reactor_process(plc, period_s=0.2))
            running = asyncio.create_task(agent.run())
            try:
                await gate1.wait_started(10)
                await gate2.wait_started(10)
                if agent.context.active("line-1") is not None:
                    agent.binder.end_batch("line-1", "tracectl demo")  # an interrupted demo's
                agent.stations.bind_document("dock-1", "po", f"PO-{run}", "tracectl demo")
                print(f"dock-1: pallet {supplier_pallet} passes the receiving gate (PO-{run})")
                await gate1.pass_pallet(sscc96(supplier_pallet), inbound=True, duration_s=1.0)
                print(f"line-1: operator OP-0042 starts {batch_id}, loads lot {flour_lot}")
                for text in (
                    "OP-0042",
                    batch_id,
                    f"(00){supplier_pallet}(01)09506000134352(10){flour_lot}(37)40",
                ):
                    await scanner.scan(text)
                    await asyncio.sleep(0.2)
                print(f"line-1: capturing the reactor for {seconds:.0f}s ...")
                await asyncio.sleep(seconds)
                for text in (f"(00){our_pallet}", f"{batch_id}-END"):
                    await scanner.scan(text)
                    await asyncio.sleep(0.2)
                agent.stations.bind_document("dock-2", "desadv", f"SH-{run}", "tracectl demo")
                print(f"dock-2: pallet {our_pallet} passes the shipping gate (SH-{run})")
                await gate2.pass_pallet(sscc96(our_pallet), inbound=False, duration_s=1.0)
                await asyncio.sleep(2.5)  # the gate's window closes
                async with asyncio.timeout(30):
                    while agent.outbox.stats().depth:
                        await asyncio.sleep(0.1)
            finally:
                scanner.stop()
                for task in (running, process):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                agent.close()

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as client:
        # What the ERP knows: whom shipment SH-... went to.
        await client.put(
            "/api/v1/erp/customers",
            json=[{"customer_id": "C-100", "name": "Corner Bakery Ltd", "address": "1 High St"}],
        )
        await client.put(
            "/api/v1/erp/shipments",
            json=[
                {
                    "shipment": f"SH-{run}",
                    "order_id": f"SO-{run}",
                    "customer_id": "C-100",
                    "carrier": "Demo Freight",
                }
            ],
        )
        params = (await client.get(f"/api/v1/batches/{batch_id}/parameters")).json()
        backward = (await client.get(f"/api/v1/lots/00/{our_pallet}/trace/backward")).json()
        recall = (await client.get(f"/api/v1/lots/01/09506000134352/10/{flour_lot}/recall")).json()
    print()
    print_parameters(params)
    print()
    print(f"Backward trace of the shipped pallet {our_pallet}:")
    for lot in backward["lots"]:
        print(f"  lot {lot['lot_code']:<22} GTIN {lot['gtin'] or '-':<15} origin {lot['origin']}")
    for r in backward["receipts"]:
        print(f"  received {r['epc']} on {r['document']} at {r['location']}")
    for gap in backward["gaps"]:
        print(f"  gap: {gap}")
    print()
    print(f"Recall list for flour lot {flour_lot}: {recall['affected_lots']} lots affected")
    for line in recall["lines"]:
        where = line["customer"] or line["location"] or "?"
        print(f"  {line['lot_code']:<22} {line['status']:<8} {where} {line['order_id'] or ''}")
    print()
    print("The API needs a key; this run's (credential `demo`, role admin; the next run's")
    print("replaces it), also for `tracectl parameters`:")
    print(f"  export TRACE_API_KEY={key}")
    print('Look at it: curl -H "Authorization: Bearer $TRACE_API_KEY" URL')
    print(f"  {api}/api/v1/lots/00/{our_pallet}/trace/backward")
    print(f"  {api}/api/v1/lots/01/09506000134352/10/{flour_lot}/recall?format=csv")
    print(f"  {api}/api/v1/batches/{batch_id}/parameters")
    print(f"  {api}/docs  (the API, interactive: Authorize with the key)")
    print("The collector keeps running; `make stop` stops it and the services.")

"""The demo line: a simulated Modbus controller read by a real edge agent, published to
the project's broker, ingested by a collector into TimescaleDB, and read back over the API.

The collector keeps running afterwards so the batch can be looked at; `make stop` ends it.

A newcomer's first contact: each step says what it does, and the first that fails stops
the demo with the reason and the fix (`DemoFailed`), never a traceback; an unexpected
error's traceback goes to .services/demo.log instead of the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
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
from tracectl.genealogy import trace_tree
from tracectl.parameters import print_parameters
from tracectl.tables import quantity, table

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TRACE_SERVICES_DIR", ROOT / ".services"))
SITE = ROOT / "deploy" / "demo" / "site.yaml"


class DemoFailed(Exception):
    """A step of the demo that cannot go on: what failed, and what to do about it."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def port_holder(port: int) -> str | None:
    """Who listens on TCP `port` ("NAME (pid N): COMMAND"), as `ss` tells it; None if nobody
    or `ss` cannot say."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    found = subprocess.run(
        [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not found:
        return None
    pid = found.split("pid=", 1)[1].split(",", 1)[0] if "pid=" in found else None
    if pid is None:
        return f"a process this user cannot see (as root: ss -ltnp 'sport = :{port}')"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    return f"{name} (pid {pid}): {command.strip()[:200]}"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in text)


def _keep_traceback(what: str) -> Path:
    log = STATE / "demo.log"
    STATE.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"--- {datetime.now(UTC).isoformat()} {what}\n{traceback.format_exc()}")
    return log


@contextlib.asynccontextmanager
async def step(what: str) -> AsyncIterator[None]:
    """One step of the demo: said, then done, or stopped with the reason and the fix."""
    print(f"demo: {what} ...", flush=True)
    try:
        yield
    except DemoFailed:
        raise
    except Exception as err:
        log = _keep_traceback(what)
        raise DemoFailed(
            f"{what} failed: {type(err).__name__}: {err}",
            f"the details are in {log}; `make stop && make demo` starts over",
        ) from err


def _failure(err: BaseException) -> DemoFailed | None:
    """`err` or, in an exception group (a task group's), its first DemoFailed."""
    if isinstance(err, DemoFailed):
        return err
    if isinstance(err, BaseExceptionGroup):
        for inner in err.exceptions:
            if found := _failure(inner):
                return found
    return None


async def check_database(url: str) -> None:
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    except psycopg.OperationalError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DemoFailed(
            f"cannot reach the database at {url} (TRACE_DATABASE_URL): {first}",
            "start the local services and take their settings: "
            'eval "$(bash deploy/services.sh up)", or run `make demo`, which does both',
        ) from None
    await conn.close()


def _no_broker(mqtt: BrokerSettings, err: Exception) -> DemoFailed:
    where = f"mqtt://{mqtt.host}:{mqtt.port}"
    holder = port_holder(mqtt.port)
    return DemoFailed(
        f"no MQTT broker answers at {where} (TRACE_MQTT_HOST, TRACE_MQTT_PORT): {err}"
        + (f"; the port is held by {holder}" if holder else ""),
        'start the local services and take their settings: eval "$(bash '
        'deploy/services.sh up)", or run `make demo`, which does both',
    )


async def check_broker_listens(mqtt: BrokerSettings) -> None:
    """Something takes connections on the broker's port (no MQTT session: a collector
    already running under the same identity keeps its own)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(mqtt.host, mqtt.port), 5)
    except (OSError, TimeoutError) as err:
        raise _no_broker(mqtt, err) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def check_broker(settings: CollectorSettings) -> None:
    """The broker takes the collector's identity (checked before a collector is started
    with it: connecting under it while one runs would take over that collector's session)."""
    mqtt = settings.mqtt
    try:
        async with aiomqtt.Client(
            **mqtt.client_args(),  # type: ignore[arg-type]
            identifier=f"{mqtt.username or 'demo'}-check",
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=5,
        ):
            pass
    except aiomqtt.MqttError as err:
        if "authoriz" in str(err).lower() or "password" in str(err).lower():
            raise DemoFailed(
                f"the broker at mqtt://{mqtt.host}:{mqtt.port} refused "
                f"TRACE_MQTT_USERNAME={mqtt.username!r}: {err}",
                'take the local services\' settings: eval "$(bash deploy/services.sh up)"',
            ) from None
        raise _no_broker(mqtt, err) from None


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn_collector(env: dict[str, str]) -> subprocess.Popen[bytes]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "collector.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_collector", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
            env={**os.environ, **env},
        )
    (STATE / "collector.pid").write_text(str(proc.pid))
    return proc


async def keeper_identity(settings: CollectorSettings) -> dict[str, str]:
    """The edge-status keeper's and the holds announcer's own broker identities (neither
    can share the consumer's: the broker gives one identity one connection), issued afresh
    for the collector the demo starts, as TRACE_EDGE_STATUS_* and TRACE_HOLDS_* settings."""
    base = settings.mqtt.username or "collector"
    env = {}
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        for suffix, prefix, comment in (
            ("status", "TRACE_EDGE_STATUS", "tracectl demo: edge status"),
            ("holds", "TRACE_HOLDS", "tracectl demo: lots on hold to the edges"),
        ):
            issued = await broker_identities.issue(
                conn, f"{base}-{suffix}"[:64], IdentityKind.collector, comment, rotate=True
            )
            env[f"{prefix}_USERNAME"] = issued.name
            env[f"{prefix}_PASSWORD"] = issued.password
        files = BrokerFiles()
        if files.configured:
            await broker_identities.update_broker(conn, files)
    return env


async def ensure_collector(settings: CollectorSettings) -> str:
    """A collector answering on the API port: the one already running, or a new one."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    if await _healthy(url):
        return url
    holder = port_holder(settings.api_port)
    if holder is not None:
        raise DemoFailed(
            f"the collector's API port {settings.api_port} is taken by {holder}, which is "
            "not a collector",
            f"stop that process, or move the API: export TRACE_API_PORT={settings.api_port + 1}",
        )
    await check_broker(settings)
    proc = _spawn_collector(await keeper_identity(settings))
    log = STATE / "collector.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoFailed(
                f"the collector exited with {proc.returncode}; the end of {log}:\n{_tail(log)}",
                "fix what the log says, then run the demo again",
            )
        if await _healthy(url):
            return url
        await asyncio.sleep(0.2)
    raise DemoFailed(
        f"the collector did not answer on {url} within 30 s; the end of {log}:\n{_tail(log)}",
        "fix what the log says (`make stop` stops the collector), then run the demo again",
    )


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


def run(seconds: float) -> int:
    """`tracectl demo`: the demo, its failure said as reason and fix; the exit status."""
    try:
        asyncio.run(run_demo(seconds))
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        failed = _failure(err)
        if failed is None:  # not foreseen by any step: its traceback goes to the log
            log = _keep_traceback("the demo")
            failed = DemoFailed(
                f"{type(err).__name__}: {err}",
                f"the details are in {log}; `make stop && make demo` starts over",
            )
        print(f"\ndemo: stopped: {failed.reason}", file=sys.stderr)
        print(f"demo: fix: {failed.fix}", file=sys.stderr)
        return 1
    return 0


async def run_demo(seconds: float) -> None:
    """A day at a small plant, compressed: a supplier pallet is received through the RFID
    gate of dock 1, its lot is consumed into a batch on line 1 while the reactor's
    temperature and pressure are recorded, the batch's output pallet is shipped through
    dock 2; then the trace answers where the output came from and where the flour went."""
    collector = CollectorSettings()
    async with step(f"checking the database at {collector.database_url}"):
        await check_database(collector.database_url)
        await asyncio.to_thread(migrate, collector.database_url)
    async with step(f"checking the broker at mqtt://{collector.mqtt.host}:{collector.mqtt.port}"):
        await check_broker_listens(collector.mqtt)
    async with step("starting the collector"):
        api = await ensure_collector(collector)
        key = await demo_key(collector.database_url)
        await _same_database(api, key, collector)
    print(
        f"collector: API on {api}, ingesting from mqtt://{collector.mqtt.host}:{collector.mqtt.port}"
    )

    run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    batch_id, flour_lot = f"WO-{run}", f"FLOUR-{run}"
    supplier_pallet = with_check_digit("3" + "9506000" + run[-9:])
    our_pallet = with_check_digit("1" + "0614141" + run[-9:])
    profile = load_profile(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
    assert isinstance(profile, ModbusTcpProfile)
    plc_port = 15020
    async with SerialLink() as dock1, SerialLink() as dock2, SerialLink() as scanner_link:
        links = {"dock-1": dock1, "dock-2": dock2, "scanner": scanner_link}
        async with step("starting the simulated plant and its edge agent"):
            site = load_site(demo_site(links))
            edge_broker = await demo_edge_identity(collector.database_url, site.edge_id)
            agent = EdgeAgent(
                EdgeSettings(
                    site=SITE, state_dir=STATE / "demo-edge", mqtt=edge_broker, status_interval_s=2
                ),
                site,
            )
            if (holder := port_holder(plc_port)) is not None:
                raise DemoFailed(
                    f"port {plc_port} of the simulated PLC (deploy/demo/site.yaml) is taken by "
                    f"{holder}",
                    "stop that process (an earlier demo still running?), then run the demo again",
                )
        plc = ModbusSimulator(profile, port=plc_port)
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
                async with step("waiting for the collector to acknowledge everything"):
                    await _drained(agent, running)
            finally:
                scanner.stop()
                for task in (running, process):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                agent.close()

    async with step("reading it back over the API"):
        answers = await _read_back(api, key, run, batch_id, flour_lot, our_pallet)
    _report(api, key, run, batch_id, flour_lot, our_pallet, *answers)


async def _same_database(api: str, key: str, settings: CollectorSettings) -> None:
    """The collector found answering knows the key just issued in TRACE_DATABASE_URL: it is
    this checkout's, not another's on the same port."""
    for _ in range(30):  # a key issued elsewhere is seen within TRACE_API_KEY_CACHE_S
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            r = await client.get(
                "/api/v1/batches", params={"limit": 1}, headers={"Authorization": f"Bearer {key}"}
            )
        if r.status_code != 401:
            return
        await asyncio.sleep(0.5)
    raise DemoFailed(
        f"the collector answering on {api} does not know the keys of {settings.database_url}: "
        "it runs against another database (another checkout's demo?)",
        f"stop it (`make stop` in its checkout), or give this demo another port: export "
        f"TRACE_API_PORT={settings.api_port + 1}",
    )


async def _drained(agent: EdgeAgent, running: asyncio.Task[None]) -> None:
    """Until the edge's outbox is empty: the collector acknowledged every record."""
    deadline = time.monotonic() + 30
    while (depth := agent.outbox.stats().depth) and time.monotonic() < deadline:
        if running.done():
            running.result()  # the agent failed: its error says why
        await asyncio.sleep(0.1)
    if depth:
        health = agent.publisher.health
        raise DemoFailed(
            f"the collector did not acknowledge {depth} record(s) within 30 s (edge connected "
            f"to the broker: {health.connected}; last error: {health.last_error}); the end of "
            f"{STATE / 'collector.log'}:\n{_tail(STATE / 'collector.log')}",
            "check that the collector ingests from the same broker (TRACE_MQTT_PORT) and "
            "database (TRACE_DATABASE_URL) as the demo: `make stop && make demo` starts both "
            "afresh",
        )


async def _read_back(
    api: str, key: str, run: str, batch_id: str, flour_lot: str, our_pallet: str
) -> tuple[Any, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"}

    async def ok(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise DemoFailed(
                f"{response.request.method} {response.request.url} answered "
                f"{response.status_code}: {response.text[:500]}",
                f"see {STATE / 'collector.log'}; `make stop && make demo` starts over",
            )
        return response.json()

    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as client:
        # What the ERP knows: whom shipment SH-... went to.
        await ok(
            await client.put(
                "/api/v1/erp/customers",
                json=[
                    {"customer_id": "C-100", "name": "Corner Bakery Ltd", "address": "1 High St"}
                ],
            )
        )
        await ok(
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
        )
        params = await ok(await client.get(f"/api/v1/batches/{batch_id}/parameters"))
        backward = await ok(await client.get(f"/api/v1/lots/00/{our_pallet}/trace/backward"))
        recall = await ok(await client.get(f"/api/v1/lots/01/09506000134352/10/{flour_lot}/recall"))
    return params, backward, recall


def _report(
    api: str,
    key: str,
    run: str,
    batch_id: str,
    flour_lot: str,
    our_pallet: str,
    params: Any,
    backward: Any,
    recall: Any,
) -> None:
    flour = f"01/09506000134352/10/{flour_lot}"
    print()
    print_parameters(params)
    print()
    print(f"Backward trace of the shipped pallet {our_pallet}:")
    print("\n".join(f"  {line}" for line in trace_tree(backward)))
    for gap in backward["gaps"]:
        print(f"  gap: {gap}")
    print()
    print(f"Recall list for flour lot {flour_lot}: {recall['affected_lots']} lots affected")
    rows = [
        [
            x["lot_code"],
            x["status"],
            x["customer"] or x["location"],
            x["order_id"],
            quantity(x["quantity"], x["uom"]),
        ]
        for x in recall["lines"]
    ]
    print(table(["LOT", "STATUS", "WHERE / CUSTOMER", "ORDER", "QUANTITY"], rows, "  "))
    print()
    print(f"Open {api}/ in a browser and sign in with this run's API key (credential `demo`,")
    print("role admin; the next run's replaces it):")
    print(f"  {key}")
    print()
    # The venv's tracectl unless one is on the PATH (make demo does not activate the venv).
    cli = "tracectl"
    if not shutil.which("tracectl"):
        venv = Path(sys.executable).parent / "tracectl"
        with contextlib.suppress(ValueError):
            venv = venv.relative_to(Path.cwd())
        cli = str(venv)
    print("Or ask from the terminal (tracectl sends TRACE_API_KEY):")
    print(f"  export TRACE_API_KEY={key}")
    if api != "http://127.0.0.1:8000":
        print(f"  export TRACE_API_URL={api}")
    for command, why in (
        (f"trace 00/{our_pallet}", "where the shipped pallet came from"),
        (f"trace {flour} --forward", "where the flour went"),
        (f"recall {flour}", "the recall list of the flour"),
        ("batches", "the batches of every line"),
        (f"parameters {batch_id}", "the batch's process values"),
        ("edges", "the line PC's status: online, outbox, batch, devices"),
        (f"export fsma {flour} --recall", "the FDA FSMA 204 spreadsheet of the recall"),
    ):
        print(f"  {cli} {command}\n      ({why})")
    print(f"The API itself: {api}/docs (Authorize with the key).")
    print("The collector keeps running; `make stop` stops it and the services.")

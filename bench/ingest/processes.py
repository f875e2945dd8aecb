"""The processes measured: `cloud-collector` started as a plant runs it (its command, its
TRACE_* settings, its own broker identity), and what each process of the pipeline costs,
read from /proc: CPU as user+system seconds, memory as peak resident size.

PostgreSQL is a tree of processes (the postmaster, a backend per connection, the writers
and autovacuum): its CPU is the postmaster's own and its reaped children's (`cutime`,
`cstime`), plus that of the children alive when it is read, so a backend that ends between
two readings is still counted. Every database of the cluster is in it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from protocols.mqtt.connection import BrokerSettings

_TICK = os.sysconf("SC_CLK_TCK")
READY_LINE = "consuming"  # the collector logs "collector X consuming <subscription>"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, reaped_children: bool = False) -> float | None:
    """User+system CPU seconds of a process (with `reaped_children`: plus those of its
    children it has waited for)."""
    fields = _stat(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def parent(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def peak_rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds of `root`, its reaped children and its living children."""
    own = cpu_seconds(root, reaped_children=True)
    if own is None:
        return None
    total = own
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and parent(int(entry.name)) == root:
            total += cpu_seconds(int(entry.name)) or 0.0
    return total


def postmaster_of(backend_pid: int) -> int | None:
    """The postmaster of a backend of ours, if the cluster runs on this host."""
    pid = parent(backend_pid)
    if pid is None:
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"postgres" in command else None


def pid_from_file(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _stat(pid) is not None else None


@dataclass
class CpuReading:
    """CPU seconds per process group, and the wall time, at one moment."""

    at: float
    seconds: dict[str, float | None]


class CpuMeter:
    """CPU of named processes between two readings, as % of one core."""

    def __init__(self, groups: dict[str, tuple[int, bool]]) -> None:
        # name -> (pid, whether it is a tree: PostgreSQL)
        self.groups = groups

    def read(self) -> CpuReading:
        seconds: dict[str, float | None] = {}
        for name, (pid, tree) in self.groups.items():
            if pid == os.getpid():
                t = os.times()
                seconds[name] = t.user + t.system
            else:
                seconds[name] = tree_cpu_seconds(pid) if tree else cpu_seconds(pid)
        return CpuReading(time.perf_counter(), seconds)

    @staticmethod
    def percent(start: CpuReading, end: CpuReading) -> dict[str, float | None]:
        wall = end.at - start.at
        out: dict[str, float | None] = {}
        for name, before in start.seconds.items():
            after = end.seconds.get(name)
            out[name] = None if before is None or after is None else 100 * (after - before) / wall
        return out


# -- the collector ----------------------------------------------------------------------


def collector_command() -> list[str]:
    """The installed `cloud-collector` beside this Python, else the module."""
    script = Path(sys.executable).parent / "cloud-collector"
    if script.exists():
        return [str(script), "run"]
    found = shutil.which("cloud-collector")
    return [found, "run"] if found else [sys.executable, "-m", "cloud_collector", "run"]


@dataclass
class CollectorProcess:
    name: str  # its broker identity, hence its MQTT client id
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_collector(
    name: str,
    broker: BrokerSettings,
    database_url: str,
    share_group: str,
    api_port: int,
    log: Path,
) -> CollectorProcess:
    """`cloud-collector run` with its settings in TRACE_* variables, as a unit file gives
    them; everything else of this environment (TLS, limits) passes through."""
    env = {k: v for k, v in os.environ.items() if k != "TRACE_COLLECTOR_ID"}
    env.update(
        TRACE_DATABASE_URL=database_url,
        TRACE_MQTT_HOST=broker.host,
        TRACE_MQTT_PORT=str(broker.port),
        TRACE_MQTT_USERNAME=broker.username or "",
        TRACE_MQTT_PASSWORD=broker.password or "",
        TRACE_SHARE_GROUP=share_group,
        TRACE_API_PORT=str(api_port),
    )
    handle = log.open("wb")
    process = subprocess.Popen(
        collector_command(), env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    handle.close()
    return CollectorProcess(name, process, log)


async def until_consuming(collectors: list[CollectorProcess], timeout_s: float = 90.0) -> None:
    """Until every collector has subscribed (messages published before would find no
    member of the group); RuntimeError with its log if one ends or does not get there."""
    deadline = time.monotonic() + timeout_s
    waiting = list(collectors)
    while waiting:
        for c in list(waiting):
            if c.process.poll() is not None:
                raise RuntimeError(
                    f"collector {c.name} exited with {c.process.returncode} before it "
                    f"subscribed; its log ({c.log}):\n{c.log_tail()}"
                )
            if READY_LINE in c.log.read_text(errors="replace"):
                waiting.remove(c)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(c.name for c in waiting)
            raise RuntimeError(
                f"collector(s) {names} did not subscribe within {timeout_s:.0f} s; "
                f"log of {waiting[0].name} ({waiting[0].log}):\n{waiting[0].log_tail()}"
            )
        await asyncio.sleep(0.1)


def stop_collector(collector: CollectorProcess, grace_s: float = 15.0) -> None:
    """SIGTERM (the API shuts down, the consumer is cancelled), SIGKILL after `grace_s`."""
    if collector.process.poll() is None:
        collector.process.send_signal(signal.SIGTERM)
        try:
            collector.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            collector.process.kill()
            collector.process.wait()


async def forget_session(broker: BrokerSettings) -> None:
    """End the broker's session of an identity: a collector keeps its session (and its
    share of the group's messages) for a day after it stops, and the next run must not
    inherit its subscription, nor the broker keep queueing for it."""
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        timeout=10,
    ):
        pass

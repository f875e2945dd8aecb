"""schemathesis against the collector's own OpenAPI, with an admin key and with a partner
key: no request it can make may get a server error (5xx) or hang.

The API runs as the collector runs it (uvicorn with server_options) on a database of its
own, migrated, so that what the fuzzer writes (customers, credentials, EPCIS captures)
never meets the other tests' data. Short here (CI); `make fuzz-api` runs the same test
longer: TRACE_FUZZ_EXAMPLES examples per operation, TRACE_FUZZ_MAX_TIME_S per key.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from cloud_collector import auth
from cloud_collector.auth import Role
from cloud_collector.migrate import migrate
from tests.cloud_collector.test_http_limits import serving
from tests.conftest import RunningCollector, Services

EXAMPLES = int(os.environ.get("TRACE_FUZZ_EXAMPLES", "8"))
MAX_TIME_S = int(os.environ.get("TRACE_FUZZ_MAX_TIME_S", "25"))
# A request slower than this is a hang (the API's own statement timeout is 30 s; nothing
# the fuzzer can ask of a small database should come near it).
REQUEST_TIMEOUT_S = 20
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
async def fuzz_database(services: Services) -> AsyncIterator[str]:
    name = f"trace_fuzz_{os.getpid()}"
    admin_url = services.database_url.rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f"drop database if exists {name} with (force)")
        await conn.execute(f"create database {name}")
    url = services.database_url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(migrate, url)
    yield url
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f"drop database if exists {name} with (force)")


async def key_of(database_url: str, role: Role) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        partner = None
        if role is Role.partner:
            partner = f"P-FUZZ-{uuid.uuid4().hex[:6]}"
            await auth.set_partner(conn, partner, ["C-FUZZ"], ["0614141000012"])
        return (await auth.issue(conn, f"fuzz-{uuid.uuid4().hex[:8]}", role, partner)).key


@pytest.mark.parametrize("role", [Role.admin, Role.partner])
async def test_no_request_gets_a_server_error_or_hangs(
    collector: RunningCollector, fuzz_database: str, role: Role, tmp_path: Path
) -> None:
    settings = collector.settings.model_copy(update={"database_url": fuzz_database})
    key = await key_of(fuzz_database, role)
    async with serving(settings) as url:
        run = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES),
            "--max-time",
            str(MAX_TIME_S),
            "--request-timeout",
            str(REQUEST_TIMEOUT_S),
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-database",
            "none",
            # One worker: CPython 3.11's ast.parse is not thread-safe ("AST constructor
            # recursion depth mismatch"), and Hypothesis parses lambdas in each worker.
            "--workers",
            "1",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its crash cache (.schemathesis/) stays out of the checkout
        )
        try:
            async with asyncio.timeout(MAX_TIME_S + 4 * REQUEST_TIMEOUT_S):
                out, _ = await run.communicate()
        finally:
            if run.returncode is None:
                run.kill()
                await run.wait()
    text = out.decode(errors="replace")
    assert run.returncode == 0, f"schemathesis with a {role} key found failures:\n{text[-20000:]}"
    assert "No issues found" in text or "passed" in text, text[-5000:]

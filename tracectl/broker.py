"""`tracectl edge add|revoke|list` and `tracectl broker add|revoke|list|files`: the broker
identities of edges and collectors, kept in the collector's database (TRACE_DATABASE_URL)
and rendered into the broker's password and ACL files (TRACE_BROKER_*), which the broker
then reloads. A password is printed once, on stdout, as the two lines the identity's
environment needs (TRACE_MQTT_USERNAME, TRACE_MQTT_PASSWORD)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime

import psycopg

from cloud_collector import broker_identities as registry
from cloud_collector.broker_identities import BrokerFiles, BrokerIdentityError, IdentityKind
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings


def _fail(message: str) -> None:
    print(f"tracectl: {message}", file=sys.stderr)
    raise SystemExit(1)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


async def _update(conn: psycopg.AsyncConnection, files: BrokerFiles) -> None:
    if not files.configured:
        _say(
            "the broker's files are not on this host (TRACE_BROKER_PASSWORD_FILE, "
            "TRACE_BROKER_ACL_FILE unset): run `tracectl broker files` where the broker runs"
        )
        return
    update = await registry.update_broker(conn, files)
    reloaded = (
        f"broker (pid {update.reloaded_pid}) reloaded"
        if update.reloaded_pid is not None
        else "reload the broker (SIGHUP) to apply them; TRACE_BROKER_PID_FILE does it for you"
    )
    _say(
        f"{update.identities} identities written to {update.password_file} and "
        f"{update.acl_file}; {reloaded}"
    )


async def _add(url: str, files: BrokerFiles, args: argparse.Namespace, kind: IdentityKind) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        issued = await registry.issue(conn, args.name, kind, args.comment, args.rotate)
        print(f"TRACE_MQTT_USERNAME={issued.name}")
        print(f"TRACE_MQTT_PASSWORD={issued.password}")
        sys.stdout.flush()
        _say(
            f"{kind} identity {issued.name!r} issued; the password above is shown only once: "
            "put both lines into that process's environment (its .env) now"
        )
        await _update(conn, files)


async def _revoke(url: str, files: BrokerFiles, name: str, kind: IdentityKind | None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if not await registry.revoke(conn, name, kind):
            what = f"{kind} identity" if kind is not None else "identity"
            _fail(f"no {what} named {name!r} is in force (tracectl broker list)")
        _say(f"identity {name!r} revoked")
        await _update(conn, files)


async def _list(url: str, revoked: bool, kind: IdentityKind | None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        identities = await registry.list_identities(conn, revoked)
    print(f"{'name':32} {'kind':10} {'created':16} {'revoked':16} comment")
    for i in identities:
        if kind is None or i.kind is kind:
            print(
                f"{i.name:32} {i.kind:10} {_when(i.created_at):16} {_when(i.revoked_at):16} "
                f"{i.comment or ''}"
            )


async def _files(url: str, files: BrokerFiles) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        update = await registry.update_broker(conn, files)  # names the settings if unset
    if update.reloaded_pid is None:
        _say("TRACE_BROKER_PID_FILE is unset: reload the broker yourself (SIGHUP)")
    print(f"{update.identities} identities written to {update.password_file} and {update.acl_file}")


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def cmd_identity(args: argparse.Namespace) -> None:
    url = CollectorSettings().database_url
    kind = IdentityKind(args.kind) if args.kind else None
    try:
        files = BrokerFiles()
        migrate(url)  # a fresh install: the collector may not have run yet
        if args.action == "add":
            assert kind is not None  # argparse: --kind is required for add
            asyncio.run(_add(url, files, args, kind))
        elif args.action == "revoke":
            asyncio.run(_revoke(url, files, args.name, kind))
        elif args.action == "list":
            asyncio.run(_list(url, args.revoked, kind))
        else:
            asyncio.run(_files(url, files))
    except BrokerIdentityError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot write the broker's files: {err}")
    except psycopg.OperationalError as err:
        _fail(f"cannot reach the collector's database ({err}); set TRACE_DATABASE_URL")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    edge = sub.add_parser("edge", help="edge agents' broker identities (credentials, ACLs)")
    edge_sub = edge.add_subparsers(dest="action", required=True)
    _identity_commands(edge_sub, IdentityKind.edge)

    broker = sub.add_parser(
        "broker", help="broker identities of edges and collectors, and the broker's files"
    )
    broker_sub = broker.add_subparsers(dest="action", required=True)
    _identity_commands(broker_sub, None)
    files = broker_sub.add_parser(
        "files", help="render the password and ACL files from the registry, reload the broker"
    )
    files.set_defaults(func=cmd_identity, kind=None)


def _identity_commands(sub: argparse._SubParsersAction, kind: IdentityKind | None) -> None:  # type: ignore[type-arg]
    what = f"an {kind}" if kind is not None else "an identity"
    add = sub.add_parser(
        "add",
        help=f"issue {what}: its password is printed once; the broker's files are updated",
    )
    add.add_argument("name", help="the edge id (as in its site file), or a collector's name")
    add.add_argument("--comment", help="where it runs, who asked for it")
    add.add_argument(
        "--rotate", action="store_true", help="replace the password of the identity in force"
    )
    revoke = sub.add_parser("revoke", help=f"revoke {what}; the broker drops its connection")
    revoke.add_argument("name")
    listing = sub.add_parser("list", help="identities in force (never the passwords)")
    listing.add_argument("--revoked", action="store_true", help="revoked ones too")
    for parser in (add, revoke, listing):
        if kind is None:
            parser.add_argument(
                "--kind",
                choices=[k.value for k in IdentityKind],
                required=parser is add,
                help="edge: publishes under its own prefix; collector: one per collector "
                "process, consumes every edge's data and sends the acks",
            )
        else:
            parser.set_defaults(kind=kind.value)
        parser.set_defaults(func=cmd_identity)

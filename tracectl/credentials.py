"""`tracectl credential add|list|revoke`: API keys of the collector's HTTP API, straight in
the collector's database (TRACE_DATABASE_URL), so the first key needs no key."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime

import psycopg

from cloud_collector import auth
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings


def _fail(message: str) -> None:
    print(f"tracectl: {message}", file=sys.stderr)
    raise SystemExit(1)


async def _add(url: str, args: argparse.Namespace) -> auth.IssuedKey:
    role = auth.Role(args.role)
    if args.partner is None and (args.customer or args.location):
        raise auth.CredentialError(
            "--customer and --location belong to a partner: add --partner ID"
        )
    connect = psycopg.AsyncConnection.connect
    async with await connect(url, autocommit=True) as conn, conn.transaction():
        if args.partner is not None and role is auth.Role.partner:
            await auth.set_partner(conn, args.partner, args.customer, args.location)
        return await auth.issue(conn, args.name, role, args.partner, args.replace)


async def _list(url: str, revoked: bool) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        credentials = await auth.list_credentials(conn, revoked)
        partners = {
            c.partner_id: await auth.load_partner(conn, c.partner_id)
            for c in credentials
            if c.partner_id is not None
        }
    print(f"{'name':24} {'role':11} {'key':12} {'created':16} {'last used':16} revoked")
    for c in credentials:
        print(
            f"{c.name:24} {c.role:11} {c.key_prefix + '…':12} {_when(c.created_at):16} "
            f"{_when(c.last_used_at):16} {_when(c.revoked_at)}"
        )
        if c.partner_id is not None and (p := partners.get(c.partner_id)) is not None:
            print(f"  partner {p.partner_id}: customers {', '.join(sorted(p.customer_ids)) or '-'}")
            print(f"  locations {', '.join(p.locations) or '- (may capture nowhere)'}")


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value is not None else "-"


async def _revoke(url: str, name: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await auth.revoke(conn, name)


def cmd_credential(args: argparse.Namespace) -> None:
    url = CollectorSettings().database_url
    try:
        migrate(url)  # a fresh install: the collector may not have run yet
        if args.action == "add":
            issued = asyncio.run(_add(url, args))
            print(issued.key)
            print(
                f"credential {issued.name!r} (role {issued.role}) issued; the key above is shown "
                "only once: store it now (send it as Authorization: Bearer KEY)",
                file=sys.stderr,
            )
        elif args.action == "list":
            asyncio.run(_list(url, args.revoked))
        elif not asyncio.run(_revoke(url, args.name)):
            _fail(f"no credential named {args.name!r} is in force (tracectl credential list)")
        else:
            print(f"credential {args.name!r} revoked")
    except auth.CredentialError as err:
        _fail(str(err))
    except psycopg.OperationalError as err:
        _fail(f"cannot reach the collector's database ({err}); set TRACE_DATABASE_URL")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cred = sub.add_parser("credential", help="API keys of the collector's HTTP API")
    cred_sub = cred.add_subparsers(dest="action", required=True)
    add = cred_sub.add_parser(
        "add", help="issue a key (printed once on stdout)", description=_roles_help()
    )
    add.add_argument("name", help="who or what uses it (e.g. erp-sync, qa-laptop, acme-dist)")
    add.add_argument("--role", required=True, choices=[r.value for r in auth.Role])
    add.add_argument("--partner", help="role partner: the distributor's id")
    add.add_argument(
        "--customer",
        action="append",
        default=[],
        help="role partner: an ERP customer id whose shipments it may see (repeatable)",
    )
    add.add_argument(
        "--location",
        action="append",
        default=[],
        help="role partner: a GLN, SGLN or read point id where it may capture (repeatable)",
    )
    add.add_argument(
        "--replace", action="store_true", help="revoke the key in force under this name"
    )
    add.set_defaults(func=cmd_credential)
    listing = cred_sub.add_parser("list", help="credentials in force (never the keys)")
    listing.add_argument("--revoked", action="store_true", help="revoked ones too")
    listing.set_defaults(func=cmd_credential)
    revoke = cred_sub.add_parser("revoke", help="revoke the key in force under a name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_credential)


def _roles_help() -> str:
    return "roles: " + "; ".join(f"{role}: {what}" for role, what in auth.ROLES.items())

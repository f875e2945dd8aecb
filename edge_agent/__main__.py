"""`edge-agent`: run the line-PC runtime for the site in TRACE_EDGE_SITE."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from edge_agent.control_token import ControlTokenError
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import SiteError, load_site


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--site", type=Path, help="site file (default: TRACE_EDGE_SITE)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = EdgeSettings()
    if args.site:
        settings = settings.model_copy(update={"site": args.site})
    try:
        site = load_site(settings.site)
    except SiteError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    agent = EdgeAgent(settings, site)
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        pass
    except ControlTokenError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    finally:
        agent.close()


if __name__ == "__main__":
    main()

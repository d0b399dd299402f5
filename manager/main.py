"""``ptap-manager``: run the manager daemon until SIGTERM or SIGINT.

    ptap-manager [--config server.cfg] [--set basic.bind_port=0] [--ready-file F]

A configuration problem, a busy port or an unusable state file ends it with
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import config
from bus.daemon import add_common_flags, parse_overrides, run, settle_heap, setup_logging
from config import ConfigError
from manager.server import Manager


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptap-manager",
        description="Run the ptap manager: agents register, jobs are dispatched, "
                    "events and live metrics are published.")
    add_common_flags(parser)
    parser.add_argument("--ready-file", metavar="FILE",
                        help='write {"router", "pub", "pull", "pid"} as JSON here once bound')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)

    async def serve() -> None:
        cfg = config.load_server(args.config, parse_overrides(args.overrides))
        async with Manager(cfg, ready_file=args.ready_file) as manager:
            settle_heap()
            await manager.serve_forever()

    return run("ptap-manager", serve, expected=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())

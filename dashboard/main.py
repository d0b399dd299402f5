"""``ptap-dashboard``: the web dashboard (docs/architecture.md#processes-and-sockets, #security, #commands), until SIGTERM or SIGINT.

    ptap-dashboard [--config frontendagentclient.cfg] [--set web.port=5006] [--log-level L]

It listens on ``[web] bind_addr:port`` (127.0.0.1:5006 by default) and talks
to the manager at ``[remote-server]``, with CURVE and the manager's admin key
from ``[security] keys_dir`` when ``[security] curve = yes``. ``--listen-fd N``
serves on an already-listening socket inherited as file descriptor N instead
(socket activation; the tests use it to get a free port without a race), and
``--ready-file F`` writes ``{"url", "port", "pid"}`` as JSON once it serves.

A bad configuration, a missing or loosely protected key file, or a busy port
ends it with one line on stderr and exit status 2. ``python -m dashboard.main``
works as well as the console script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bokeh.util import logconfig as bokeh_logconfig

from bus.daemon import add_common_flags, parse_overrides, run, settle_heap, setup_logging
from bus.ratelimit import RateLimitFilter
from config import ConfigError, load_dashboard
from dashboard.app import Dashboard

PROG = "ptap-dashboard"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run the ptap web dashboard: live charts, nodes, jobs, reports.")
    add_common_flags(parser)
    parser.add_argument("--listen-fd", type=int, metavar="N",
                        help="serve on this inherited listening socket (socket activation)")
    parser.add_argument("--ready-file", metavar="FILE",
                        help='write {"url", "port", "pid"} as JSON here once serving')
    return parser


def write_ready(path: str, dash: Dashboard) -> None:
    """Atomically, so a reader never sees half a file."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"url": dash.url, "port": dash.port, "pid": os.getpid()}))
    tmp.replace(target)


def remove_ready(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    # Bokeh gave its logger a handler of its own when it was imported before
    # logging was set up; this hands its lines to ours (one format, one line).
    bokeh_logconfig.basicConfig()
    # Bokeh and Tornado log every bad websocket message (with its traceback): a
    # flood of them is one line per kind per period here.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RateLimitFilter(("bokeh", "tornado")))

    async def serve() -> None:
        cfg = load_dashboard(args.config, parse_overrides(args.overrides))
        async with Dashboard(cfg, listen_fd=args.listen_fd) as dash:
            if args.ready_file:
                write_ready(args.ready_file, dash)
            settle_heap()
            try:
                await dash.serve_forever()
            finally:
                if args.ready_file:
                    remove_ready(args.ready_file)

    return run(PROG, serve, expected=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())

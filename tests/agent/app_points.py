"""A test program: K numbered app points, sent when the test says go.

Usage: ``python app_points.py udp|stream K GO_FIFO SENT_FILE EXIT_CODE``.

It opens ``GO_FIFO`` and blocks until the test writes to it (so the test can
pause the agent first), sends ``seq value=I`` for I in 0..K-1 with distinct
timestamps, one per datagram to ``$PTAP_METRICS`` or as lines to
``$PTAP_METRICS_STREAM``, creates ``SENT_FILE``, and exits with ``EXIT_CODE``.
Tests count the numbers InfluxDB holds against K.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path


def address(variable: str, scheme: str) -> tuple[str, int]:
    got, _, rest = os.environ[variable].partition("://")
    assert got == scheme, os.environ[variable]
    host, _, port = rest.rpartition(":")
    return host, int(port)


def main() -> int:
    mode, count, go, sent, code = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
        int(sys.argv[5])
    with open(go, encoding="ascii") as fifo:
        fifo.read()  # returns once the test has written and closed its end
    t0 = time.time_ns()
    lines = [f"seq value={i} {t0 + i * 1000}\n".encode() for i in range(count)]
    if mode == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            target = address("PTAP_METRICS", "udp")
            for line in lines:
                sock.sendto(line, target)
    else:
        with socket.create_connection(address("PTAP_METRICS_STREAM", "tcp")) as conn:
            conn.sendall(b"".join(lines))
    Path(sent).touch()
    return code


if __name__ == "__main__":
    sys.exit(main())

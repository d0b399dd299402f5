"""The fault suite's job: send K numbered app points at a steady rate, then exit 0.

Usage: ``python workload.py COUNT RATE [--per-datagram N] [--stream]``.

Point ``i`` (0 ≤ i < COUNT) is the line protocol line ``faultseq value=i T0+i·1000``
(distinct nanosecond timestamps, so InfluxDB keeps every one of them and a
resent point overwrites only itself). The suite asks InfluxDB which values of
``i`` it holds: exactly the points that arrived, none guessed.

Lines go to ``$PTAP_METRICS`` (``udp://HOST:PORT``), ``--per-datagram`` lines per
datagram (default: what one 10 ms step of RATE holds), paced from the start so
that a stall of this process does not lower the rate it averages. With
``--stream`` they go to the agent's stream endpoint instead, a connected socket
that never drops a line (``$PTAP_METRICS_STREAM``: ``tcp://HOST:PORT``, or
``unix:///path``). At the end it prints ``faultseq sent=COUNT`` (the tail
the suite reads back from the run's output).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

STEP = 0.01  # seconds between sends at most: a steady stream, not bursts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("rate", type=float, help="points per second")
    parser.add_argument("--per-datagram", type=int, default=0)
    parser.add_argument("--stream", action="store_true")
    return parser.parse_args()


def open_udp() -> tuple[socket.socket, tuple[str, int]]:
    scheme, _, rest = os.environ["PTAP_METRICS"].partition("://")
    if scheme != "udp":
        sys.exit(f"workload: PTAP_METRICS={os.environ['PTAP_METRICS']!r} is not udp://")
    host, _, port = rest.rpartition(":")
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (host, int(port))


def open_stream() -> socket.socket:
    address = os.environ.get("PTAP_METRICS_STREAM", "")
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(rest)
    elif scheme == "tcp":
        host, _, port = rest.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
    else:
        sys.exit(f"workload: no stream endpoint (PTAP_METRICS_STREAM={address!r})")
    return sock


def send_udp(sock: socket.socket, target: tuple[str, int], payload: bytes) -> None:
    while True:
        try:
            sock.sendto(payload, target)
            return
        except (BlockingIOError, InterruptedError, OSError):
            # ENOBUFS on a loaded host: the point is not sent yet, so send it again.
            time.sleep(0.001)  # wait-ok: back-off of a failed send


def main() -> int:
    args = parse_args()
    per = args.per_datagram or max(1, round(args.rate * STEP))
    interval = per / args.rate
    udp = None if args.stream else open_udp()
    stream = open_stream() if args.stream else None
    t0 = time.time_ns()
    start = time.monotonic()
    for first in range(0, args.count, per):
        lines = [f"faultseq value={i} {t0 + i * 1000}"
                 for i in range(first, min(first + per, args.count))]
        payload = ("\n".join(lines) + "\n").encode()
        if stream is not None:
            stream.sendall(payload)
        else:
            assert udp is not None
            send_udp(*udp, payload)
        due = start + (first // per + 1) * interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # wait-ok: paces the workload at its rate
    if stream is not None:
        stream.close()  # after the last line: the agent reads up to the end of the stream
    print(f"faultseq sent={args.count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

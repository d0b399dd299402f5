"""A test program for the metrics plane: forks children, reports its own numbers, prints marks.

Usage: ``python workload.py POINTS SECONDS``. It sends ``POINTS`` app points
(line protocol with explicit, distinct timestamps) spread over ``SECONDS`` to
``$PTAP_METRICS``, plus StatsD timings, while two children burn a little CPU,
and prints ``PTAP mark`` lines at phase changes. Tests count the points it
sent against what InfluxDB holds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def main() -> int:
    points, seconds = int(sys.argv[1]), float(sys.argv[2])
    scheme, _, rest = os.environ["PTAP_METRICS"].partition("://")
    host, _, port = rest.rpartition(":")
    assert scheme == "udp", os.environ["PTAP_METRICS"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    burn = f"import time\nend = time.time() + {seconds:f}\nwhile time.time() < end: pass\n"
    children = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    print("PTAP mark phase=measure iteration=1", flush=True)
    t0 = time.time_ns()
    for i in range(points):
        line = f"seqpoint,route=/a value={i} {t0 + i * 1000}\nlatency:{i % 7}|ms"
        sock.sendto(line.encode(), (host, int(port)))
        time.sleep(seconds / points)  # pacing the workload, not synchronisation  # wait-ok: paces the workload
    for child in children:
        child.wait()
    print("PTAP mark phase=done", flush=True)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

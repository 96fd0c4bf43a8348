#!/usr/bin/python3
"""Slow-header clients against a kvhubd HTTP port, with a liveness probe per round.

  /usr/bin/python3 bench/http_trickle.py HTTP_PORT N [SECONDS]

Opens N connections, then for SECONDS (default 10) rounds: one more byte of a request
head on each (they never finish it), a /healthz probe with a 1 s timeout as a Kubernetes
liveness probe does, a 1 s pause (a failed probe makes its round 2 s). Prints the slowest probe, the failed probes, the sends refused (connections
the server closed) and how long a /metrics scrape takes afterwards. docs/results.md,
"Session 16".
"""
import socket
import sys
import time
import urllib.request


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000
    latencies, refused = [], 0
    end, r = time.time() + seconds, 0
    while time.time() < end:
        for s in conns:
            try:
                s.send(head[r:r + 1])
            except OSError:
                refused += 1
        start = time.time()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            latencies.append(time.time() - start)
        except Exception:  # noqa: BLE001 - any failure is a failed probe
            latencies.append(float("inf"))
        time.sleep(1)
        r += 1
    start = time.time()
    try:
        size = len(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
        scrape = f"/metrics {size} bytes in {(time.time() - start) * 1000:.1f} ms"
    except Exception as e:  # noqa: BLE001
        scrape = f"/metrics failed: {e}"
    failed = sum(1 for x in latencies if x == float("inf"))
    ok = [x for x in latencies if x != float("inf")]
    slowest = f"{max(ok) * 1000:.1f} ms" if ok else "-"
    print(f"{n} trickling connections, {seconds:g} s: probes failed {failed} of {len(latencies)}, "
          f"slowest answered {slowest}; sends refused {refused}; {scrape}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Pipelining clients against a kvhubd HTTP port, with /healthz probes meanwhile.

  /usr/bin/python3 bench/http_pipeline.py HTTP_PORT N [PROBES]

N clients each send `GET /metrics` 3,000 at a time, over and over, and read what comes
back; after 0.5 s, PROBES (default 10) /healthz requests on fresh connections, 0.2 s
apart, each timed to its whole answer. Prints the probe latencies in seconds and the
bytes the clients received. docs/results.md, "Session 17".
"""
import socket
import sys
import threading
import time

port = int(sys.argv[1])
clients = int(sys.argv[2])
probes = int(sys.argv[3]) if len(sys.argv) > 3 else 10
stop = threading.Event()
received = [0]


def pipeliner():
    s = socket.create_connection(("127.0.0.1", port))
    burst = b"GET /metrics HTTP/1.1\r\nHost: kvhubd\r\n\r\n" * 3000

    def reader():
        while not stop.is_set():
            data = s.recv(1 << 20)
            if not data:
                return
            received[0] += len(data)

    threading.Thread(target=reader, daemon=True).start()
    try:
        while not stop.is_set():
            s.sendall(burst)
    except OSError:
        pass


def probe():
    start = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    return time.time() - start


for _ in range(clients):
    threading.Thread(target=pipeliner, daemon=True).start()
time.sleep(0.5)
latencies = []
for _ in range(probes):
    latencies.append(round(probe(), 3))
    time.sleep(0.2)
stop.set()
print("probe latencies (s):", latencies, "; bytes the pipelining clients received:", received[0])

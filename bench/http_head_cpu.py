#!/usr/bin/python3
"""CPU a kvhubd spends on request heads that arrive one short line per read.

  /usr/bin/python3 bench/http_head_cpu.py KVHUBD [LINES] [CONNS]

Starts KVHUBD (HTTP on a free loopback port), opens CONNS (default 4) connections,
sends each a request line and then LINES (default 5000) header lines "a:\\n", one
per send with a 0.1 ms pause (so each is its own read), never the blank line, and
prints the shard's CPU seconds over that (from /proc/PID/stat). Run it for two
builds side by side; docs/results.md, "Session 28".
"""
import os
import socket
import subprocess
import sys
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    binary = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    nconn = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([binary, "--grpc_address=127.0.0.1:0", f"--http_address=127.0.0.1:{port}",
                             "--capacity_bytes=64MiB", "--try_hugepages=false", "--log_level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(nconn)]
        for c in conns:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0 = cpu_seconds(proc.pid)
        for _ in range(lines):
            for c in conns:
                c.send(b"a:\n")
            time.sleep(0.0001)
        time.sleep(0.3)
        t1 = cpu_seconds(proc.pid)
        for c in conns:
            c.close()
        print(f"{binary}: {t1 - t0:.2f} CPU s for {nconn} connections x {lines} header lines")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()

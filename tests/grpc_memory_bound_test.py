#!/usr/bin/python3
"""A client that opens many gRPC streams and sends each only part of a large
message (no valid token needed: messages arrive before any token is checked)
must not grow kvhubd without bound: `grpc_memory_bytes` caps what gRPC holds,
and gRPC cancels streams beyond it (session 15: 250 such streams took a shard
from 72 MiB to 2 GiB in 14 s, and nothing stopped it going further).

Speaks HTTP/2 itself (the standard library only), as such a client would.
Usage: grpc_memory_bound_test.py --bin BUILD/bin [--sanitized]
(--sanitized: ASan keeps freed memory in quarantine and adds shadow pages, so the
resident size says nothing there; the streams must still be cancelled.)
"""

import argparse
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_literal(name, value):  # literal header field without indexing, no Huffman
    def s(x):
        x = x.encode()
        assert len(x) < 127
        return bytes([len(x)]) + x
    return b"\x00" + s(name) + s(value)


class H2:
    """Just enough HTTP/2 to open streams and send DATA within flow control."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setblocking(False)
        self.next_sid = 1
        self.conn_window = 65535
        self.initial_window = 65535
        self.windows = {}
        self.reset = set()
        self.buf = b""
        # Preface; our own receive window is large, and no server push.
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, struct.pack(">HI", 4, 1 << 30) + struct.pack(">HI", 2, 0)))

    def send(self, data):
        while data:
            try:
                n = self.sock.send(data)
                data = data[n:]
            except BlockingIOError:
                select.select([], [self.sock], [], 1)

    def open(self, method):
        sid = self.next_sid
        self.next_sid += 2
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/kvhub.v1.KvHub/" + method),
                   (":authority", self.addr), ("content-type", "application/grpc"), ("te", "trailers"),
                   ("authorization", "Bearer not-a-token-of-this-shard-0123456789")]
        self.send(frame(1, 4, sid, b"".join(hpack_literal(k, v) for k, v in headers)))
        self.windows[sid] = self.initial_window
        return sid

    def push(self, sid, data):
        """Sends what flow control allows of `data` (never END_STREAM); returns the rest."""
        while data and sid not in self.reset:
            n = min(16384, len(data), self.conn_window, self.windows[sid])
            if n <= 0:
                break
            self.send(frame(0, 0, sid, data[:n]))
            data = data[n:]
            self.conn_window -= n
            self.windows[sid] -= n
        return data

    def pump(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            r, _, _ = select.select([self.sock], [], [], max(0, end - time.time()))
            if not r:
                return
            try:
                got = self.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not got:
                return
            self.buf += got
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload = self.buf[9:9 + length]
                self.buf = self.buf[9 + length:]
                if ftype == 4 and not flags & 1:  # SETTINGS: note the initial window, ack
                    for i in range(0, len(payload), 6):
                        key, value = struct.unpack(">HI", payload[i:i + 6])
                        if key == 4:
                            for s in self.windows:
                                self.windows[s] += value - self.initial_window
                            self.initial_window = value
                    self.send(frame(4, 1, 0, b""))
                elif ftype == 8:  # WINDOW_UPDATE
                    inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
                    if sid == 0:
                        self.conn_window += inc
                    elif sid in self.windows:
                        self.windows[sid] += inc
                elif ftype == 6 and not flags & 1:  # PING
                    self.send(frame(6, 1, 0, payload))
                elif ftype == 3 or (ftype == 1 and flags & 1):  # RST_STREAM, or trailers only
                    self.reset.add(sid)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) // 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sanitized", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kvhub_grpc_memory_")
    ready = os.path.join(work, "ready")
    shard = subprocess.Popen([os.path.join(args.bin, "kvhubd"), "--grpc_address=127.0.0.1:0",
                              "--http_address=127.0.0.1:0", f"--ready_file={ready}", "--capacity_bytes=64MiB",
                              "--max_block_bytes=4MiB", "--try_hugepages=false", "--log_level=warn",
                              "--grpc_memory_bytes=128MiB"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                break
            time.sleep(0.1)
        addr = re.search(r"grpc=(\S+)", open(ready).read()).group(1)
        before = rss_mib(shard.pid)
        conn = H2(addr)
        conn.pump(0.2)
        # 100 Put streams, each declaring a 250 MiB message and sending up to 4 MiB of it:
        # 400 MiB offered, more than three times the 128 MiB gRPC may hold.
        body = b"\x00" + struct.pack(">I", 250 << 20) + b"\0" * (4 << 20)
        pending = {conn.open("Put"): body for _ in range(100)}
        deadline = time.time() + 20
        while time.time() < deadline and any(pending.values()):
            for sid in list(pending):
                pending[sid] = b"" if sid in conn.reset else conn.push(sid, pending[sid])
            conn.pump(0.05)
        conn.pump(1)
        grown = rss_mib(shard.pid) - before
        cancelled = len(conn.reset)
        print(f"offered 400 MiB on 100 streams: kvhubd grew {grown} MiB, {cancelled} streams cancelled")
        assert shard.poll() is None, "kvhubd died"
        # Not the 400 MiB offered: gRPC's 128 MiB, plus allocator slack.
        assert args.sanitized or grown < 300, f"kvhubd grew {grown} MiB under 400 MiB of half-sent messages"
        assert cancelled > 0, "no stream was cancelled at the memory limit"
        # And it still serves: a fresh connection's Stats call (no token configured).
        out = subprocess.run([os.path.join(args.bin, "kvhub"), "stats", "--addr", addr],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        print("grpc_memory_bound_test passed")
    finally:
        shard.terminate()
        try:
            shard.wait(timeout=20)
        except subprocess.TimeoutExpired:
            shard.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())

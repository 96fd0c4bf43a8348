"""A kvhubd child process for the Python tests: started on ephemeral ports, its
address read from its ready line within a deadline, stopped with SIGTERM (and
killed if it does not stop), never left running."""
import os
import select
import subprocess
import time

STARTUP_TIMEOUT_S = 30


def read_first_line(pipe, timeout_s):
    """The first line a child writes to pipe, or what it wrote before exiting or before
    timeout_s passed: never blocks past the deadline (a plain readline() would wait
    forever on a child that hangs before printing)."""
    fd, data = pipe.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:  # the child closed its stdout (it exited)
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


class KvhubdChild:
    """`binary` on 127.0.0.1 ephemeral ports with a 64 MiB tier, plus `flags`."""

    def __init__(self, binary, *flags):
        self.proc = subprocess.Popen(
            [binary, "--grpc_address=127.0.0.1:0", "--http_address=127.0.0.1:0",
             "--capacity_bytes=64MiB", "--max_block_bytes=1MiB", "--try_hugepages=false",
             "--log_level=warn", *flags],
            stdout=subprocess.PIPE)
        line = read_first_line(self.proc.stdout, STARTUP_TIMEOUT_S)
        fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
        if not line.startswith("kvhubd ready ") or "grpc" not in fields:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            raise RuntimeError(f"{binary} did not start within {STARTUP_TIMEOUT_S} s: {line!r}")
        self.address = fields["grpc"]

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave it running
            self.proc.wait()
            raise
        finally:
            self.proc.stdout.close()

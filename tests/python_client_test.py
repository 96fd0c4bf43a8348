#!/usr/bin/python3
"""kvhub._native (the Python client module) against real kvhubd processes.

Run by ctest (`python_client_test`) with PYTHONPATH=build/python and
KVHUB_BIN_DIR=build/bin; by hand:
  PYTHONPATH=build/python KVHUB_BIN_DIR=build/bin /usr/bin/python3 tests/python_client_test.py
"""
import collections
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

import numpy as np

import kvhub
from kvhub import keys as pykeys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "testing"))
from kvhubd_child import KvhubdChild  # noqa: E402

BIN = os.environ.get("KVHUB_BIN_DIR", "build/bin")
SPEC = "model=py-test,layers=2,kv_heads=2,head_dim=64,dtype=bf16,rope_base=10000,block_tokens=16"




def payload(seed, n):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Each shard's stop is registered as soon as it runs: a shard that fails to
        # start does not leave the one before it running, and every shard is stopped
        # even when another exits badly.
        cls.shards = []
        for _ in range(2):
            shard = KvhubdChild(os.path.join(BIN, "kvhubd"))
            cls.addClassCleanup(cls.stop_shard, shard)
            cls.shards.append(shard)
        cls.members = ",".join(s.address for s in cls.shards)

    @staticmethod
    def stop_shard(shard):
        code = shard.stop()
        if code != 0:
            raise AssertionError(f"kvhubd exited {code} on SIGTERM")

    def test_publish_lookup_fetch_byte_exact(self):
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)
        spec = kvhub.ModelSpec(SPEC)
        tokens = np.arange(16 * 6 + 5, dtype=np.int32)  # 6 full blocks and a partial tail
        blocks = [payload(i, 4096 + 100 * i) for i in range(6)]
        r = c.publish("py-ns", spec, tokens, blocks)
        self.assertEqual((r.stored, r.skipped, r.failed), (6, 0, 0), r.errors)
        self.assertEqual(r.outcome, ["stored"] * 6)
        # The keys are DESIGN §2's: the pure-Python implementation agrees.
        self.assertEqual(r.keys, kvhub.block_keys("py-ns", spec, tokens))
        py_spec = {"model": "py-test", "layers": 2, "kv_heads": 2, "head_dim": 64, "dtype": "bf16",
                   "rope_base": 10000.0, "rope_pairing": "neox", "tp_rank": 0, "tp_world": 1, "block_tokens": 16}
        self.assertEqual(spec.fingerprint, pykeys.u128_hex(pykeys.fingerprint(py_spec)))
        py_keys = pykeys.block_keys("py-ns", py_spec, [int(t) for t in tokens])
        self.assertEqual(r.keys, [pykeys.u128_bytes(k) for k in py_keys])
        self.assertEqual(pykeys.block_keys("py-ns", py_spec, tokens), py_keys)  # numpy ids too
        np_spec = {**py_spec, "layers": np.int64(2), "rope_base": np.float32(10000.0)}
        self.assertEqual(pykeys.fingerprint(np_spec), pykeys.fingerprint(py_spec))
        # What the C++ side refuses, the Python keys refuse too: such input would hash
        # to keys no engine makes ("032" is not 32 to a hash, nor True a token).
        for bad in ({"layers": "032"}, {"layers": True}, {"tp_rank": 1}, {"rope_base": float("nan")},
                    {"dtype": "bfloat16"}, {"model": "a|b"}, {"block_tokens": 0}):
            with self.assertRaises(ValueError, msg=str(bad)):
                pykeys.fingerprint({**py_spec, **bad})
        with self.assertRaises(ValueError):  # not OverflowError
            pykeys.fingerprint({**py_spec, "rope_base": 10 ** 309})
        for ns in ("", "a\x01b", "x" * 257):
            with self.assertRaises(ValueError, msg=repr(ns)):
                pykeys.block_keys(ns, py_spec, [1] * 16)
        # The partial tail's ids are checked too, and a bytes object is not a list of ids.
        for toks in ([True] * 16, [np.True_] * 16, [1.5] * 16, [2 ** 31] * 16, [1] * 16 + [2 ** 40],
                     [1] * 16 + [None], b"\x01" * 64):
            with self.assertRaises(ValueError, msg=repr(toks[0])):
                pykeys.block_keys("py-ns", py_spec, toks)
        # An iterator is walked once: the bool is named, not a second empty pass's error.
        with self.assertRaisesRegex(ValueError, "must be ints, got True"):
            pykeys.block_keys("py-ns", py_spec, iter([1] * 15 + [True]))
        # `import kvhub` is enough for kvhub.keys (an AttributeError before), and the
        # fields ModelSpec defaults may be left out (a bare KeyError: 'tp_world' before).
        short = {k: v for k, v in py_spec.items() if k not in ("tp_rank", "tp_world", "rope_pairing", "dtype")}
        self.assertEqual(kvhub.keys.fingerprint(short), pykeys.fingerprint(py_spec))
        self.assertEqual(kvhub.keys.block_keys("py-ns", short, [int(t) for t in tokens]), py_keys)
        self.assertEqual(kvhub.keys.block_keys("py-ns", {k: v for k, v in short.items() if k != "block_tokens"},
                                               [int(t) for t in tokens]), [])  # 256-token blocks: none full
        with self.assertRaisesRegex(ValueError, "head_dim required"):
            pykeys.fingerprint({k: v for k, v in py_spec.items() if k != "head_dim"})
        with self.assertRaisesRegex(ValueError, "unknown field"):
            pykeys.fingerprint({**py_spec, "tp_size": 2})
        again = c.publish("py-ns", spec, tokens, blocks)
        self.assertEqual(again.skipped, 6)
        # pin=True pins blocks that are present already (a put never pins an existing
        # key: they stayed evictable while the caller was told nothing).
        pinned = c.publish("py-ns", spec, tokens, blocks, pin=True)
        self.assertEqual((pinned.skipped, pinned.failed), (6, 0), pinned.errors)
        self.assertEqual(sum(s["pinned_blocks"] for s in c.stats()), 6)
        # A fresh publish with pin=True: stored pinned, and pinned again (idempotent).
        fresh = c.publish("py-pin-fresh", spec, tokens, blocks, pin=True)
        self.assertEqual((fresh.stored, fresh.failed), (6, 0), fresh.errors)
        self.assertEqual(sum(s["pinned_blocks"] for s in c.stats()), 12)
        self.assertEqual(c.pin("py-pin-fresh", fresh.keys, False), [None] * 6)
        self.assertEqual(c.pin("py-ns", pinned.keys, False), [None] * 6)
        self.assertEqual(sum(s["pinned_blocks"] for s in c.stats()), 0)
        self.assertTrue(c.pin("py-ns", [b"\x07" * 16])[0].startswith("NOT_FOUND"))

        hit = c.lookup_prefix("py-ns", spec, tokens)
        self.assertEqual((hit.hit_blocks, hit.hit_tokens), (6, 96))
        self.assertIsNone(hit.first_error)
        # A prompt that diverges in block 3 hits 3 blocks.
        other = tokens.copy()
        other[16 * 3] = -1
        self.assertEqual(c.lookup_prefix("py-ns", spec, other).hit_blocks, 3)

        bufs = [np.zeros(len(b), dtype=np.uint8) for b in blocks]
        f = c.fetch("py-ns", spec, tokens, bufs)
        self.assertEqual((f.valid_blocks, f.valid_tokens), (6, 96))
        self.assertEqual(f.errors, [None] * 6)
        for got, want in zip(bufs, blocks):
            self.assertTrue(np.array_equal(got, want))
        # A buffer too small for its block: that block fails, clearly, the rest is intact.
        small = [bytearray(len(blocks[0])), bytearray(10)]
        f = c.fetch("py-ns", spec, tokens, small)
        self.assertEqual(f.valid_blocks, 1)
        self.assertIsNotNone(f.errors[1])
        self.assertEqual(bytes(small[0]), blocks[0].tobytes())

    def test_key_level_put_get_lookup_delete(self):
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)
        ks = [bytes([i]) * 16 for i in range(1, 5)]
        data = [payload(100 + i, 1000 * (i + 1)).tobytes() for i in range(4)]
        r = c.put("py-keys", ks, data)
        self.assertEqual(r.stored, 4)
        self.assertEqual(c.lookup("py-keys", ks).present, [True] * 4)
        self.assertEqual(c.lookup("py-keys", ks).answered, [True] * 4)
        bufs = [bytearray(len(d)) for d in data]
        g = c.get("py-keys", ks, bufs)
        self.assertEqual(g.valid_blocks, 4)
        self.assertEqual([bytes(b) for b in bufs], data)
        self.assertEqual(c.delete("py-keys", ks[:2]), [None, None])
        self.assertEqual(c.lookup("py-keys", ks).present, [False, False, True, True])
        self.assertTrue(c.delete("py-keys", ks[:1])[0].startswith("NOT_FOUND"))
        stats = c.stats()
        self.assertEqual(len(stats), 2)
        for s in stats:
            self.assertIsNone(s["error"])
            self.assertGreater(s["capacity_bytes"], 0)
            self.assertEqual(s["ucx_worker_resets"], 0)
        self.assertTrue(all(t["transport"].startswith("grpc") for t in c.transport_stats()))
        # Chained puts name each block's parent, as publish does (prefix-aware eviction).
        chain = [bytes([i]) * 16 for i in range(10, 13)]
        r = c.put("py-keys", chain, data[:3], parents=[None, chain[0], chain[1]])
        self.assertEqual(r.stored, 3)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT.*parents"):
            c.put("py-keys", chain, data[:3], parents=[None])
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            c.put("py-keys", chain[:1], data[:1], parents=[b"short"])

    def test_model_specs_pickle_to_the_same_spec(self):
        # Specs cross to spawn/forkserver workers (docs/client.md): by their compact form.
        for text in (SPEC, "model=m,layers=3,kv_heads=1,head_dim=8,dtype=fp16,rope_base=500000.123456789,"
                           "rope_pairing=interleaved,tp_rank=1,tp_world=4,block_tokens=512"):
            spec = kvhub.ModelSpec(text)
            again = pickle.loads(pickle.dumps(spec))
            self.assertEqual(again.fingerprint, spec.fingerprint)
            self.assertEqual(again, spec)
            self.assertEqual(hash(again), hash(spec))
            self.assertEqual(kvhub.ModelSpec(spec.compact).fingerprint, spec.fingerprint)
        self.assertNotEqual(kvhub.ModelSpec(SPEC), kvhub.ModelSpec(SPEC.replace("layers=2", "layers=3")))
        self.assertFalse(kvhub.ModelSpec(SPEC) == None)  # noqa: E711 (an operator: NotImplemented, not TypeError)
        self.assertIn(kvhub.ModelSpec(SPEC), [None, "x", kvhub.ModelSpec(SPEC)])

    def test_proxy_environment_is_ignored_unless_asked(self):
        # A proxy set for outbound web traffic (here a dead port) must not sit
        # between the client and its shards.
        saved = {v: os.environ.get(v) for v in ("grpc_proxy", "https_proxy", "http_proxy", "no_proxy")}
        try:
            for v in ("grpc_proxy", "https_proxy", "http_proxy"):
                os.environ[v] = "http://127.0.0.1:9"
            os.environ.pop("no_proxy", None)
            with kvhub.Client(self.members, transport="grpc") as c:
                self.assertTrue(all(s["error"] is None for s in c.stats()))
            with kvhub.Client(self.members, transport="grpc", use_proxy_env=True) as proxied:
                self.assertTrue(all(s["error"] is not None for s in proxied.stats()))
        finally:
            for v, value in saved.items():
                if value is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = value

    def test_forked_child_gets_a_clear_error_instead_of_a_hang(self):
        # multiprocessing's "fork" start method copies a process with a client:
        # the child must get kvhub.Error at once, not hang; the parent goes on.
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)  # in this process only: the child leaves by os._exit
        self.assertTrue(all(s["error"] is None for s in c.stats()))
        # A thread keeps a call in flight while the process forks: the child inherits
        # the count of calls in flight, whose threads it does not have, and close()
        # (as leaving a `with` block does) used to wait for them forever.
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                c.stats()

        t = threading.Thread(target=busy, daemon=True)
        t.start()
        self.addCleanup(t.join)  # cleanups run last first: stop, join, then close
        self.addCleanup(stop.set)
        time.sleep(0.05)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:  # whatever happens, the child never returns into unittest (its cleanups)
                verdict = b"no error"
                try:
                    c.put("py-fork", [b"f" * 16], [b"x"])
                except kvhub.Error as e:
                    verdict = b"ok" if "forked" in str(e) else str(e).encode()
                c.close()
                os.write(write_end, verdict)
            finally:
                os._exit(0)
        stop.set()
        t.join()
        os.close(write_end)
        deadline = time.time() + 20
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                self.fail("the forked child hung")
            time.sleep(0.01)
        self.assertEqual(os.read(read_end, 4096), b"ok")
        os.close(read_end)
        self.assertEqual(c.put("py-fork", [b"f" * 16], [b"x"]).stored, 1)

    def test_deadlines_are_checked_and_logs_stay_off_stdout(self):
        # inf meant no deadline at all; nan and negatives quietly meant the default.
        for name in ("deadline_s", "data_deadline_s"):
            for bad in (float("inf"), float("nan"), -5.0, 1e9, 1e-10):  # 1e-10: kvhub.Error before
                with self.assertRaises(ValueError, msg=f"{name}={bad}"):
                    kvhub.Client(self.members, transport="grpc", **{name: bad})
        kvhub.Client(self.members, transport="grpc", deadline_s=0.5, data_deadline_s=5).close()
        # A program's stdout is its own (JSON, tables): the client logs to stderr. UCX
        # forced over shared memory, which these shards do not serve, logs an error.
        script = textwrap.dedent(f'''
            import kvhub
            c = kvhub.Client({self.members!r}, transport="ucx", ucx_tls="posix,cma")
            try:
                c.put("py-log", [b"l" * 16], [b"x"])
            except kvhub.Error:
                pass
            c.close()
        ''')
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("kvhub client: shard", r.stderr)

    def test_bad_input_raises_clear_errors_and_changes_nothing(self):
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)  # for a failure before the close() below; a second close is a no-op
        spec = kvhub.ModelSpec(SPEC)
        tokens = np.arange(32, dtype=np.int32)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            c.publish("py-bad", spec, tokens, [b"x"])  # 2 full blocks, 1 payload
        with self.assertRaisesRegex(kvhub.Error, "16 bytes"):
            c.lookup("py-bad", [b"short"])
        with self.assertRaisesRegex(kvhub.Error, "writable"):
            c.get("py-bad", [b"k" * 16], [b"read-only bytes"])
        with self.assertRaisesRegex(kvhub.Error, "one payload per key"):
            c.put("py-bad", [b"k" * 16], [])
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            c.lookup("x" * 300, [b"k" * 16])  # namespace over 256 bytes
        with self.assertRaisesRegex(kvhub.Error, "transport"):
            kvhub.Client(self.members, transport="carrier-pigeon")
        for bad in (0.5, float("nan"), 1e6):  # 0.5 raised kvhub.Error, deadline_s=-1 ValueError
            with self.assertRaisesRegex(ValueError, "tls_reload_s must be 1 .. 86400"):
                kvhub.Client(self.members, tls_reload_s=bad)
        # The status code is an attribute: callers branch on it, not on the text.
        try:
            c.lookup("py-bad", [b"short"])
            self.fail("a 5-byte key was taken")
        except kvhub.Error as e:
            self.assertEqual(e.code, "INVALID_ARGUMENT")
        # Destinations of Python objects: block bytes would overwrite object pointers
        # (a crash later), and uploading them leaks addresses.
        with self.assertRaisesRegex(kvhub.Error, "holds Python objects"):
            c.get("py-bad", [b"k" * 16], [np.empty(16, dtype=object)])
        with self.assertRaisesRegex(kvhub.Error, "holds Python objects"):
            c.put("py-bad", [b"k" * 16], [np.empty(16, dtype=object)])
        # Bytes are no token ids: a bytearray was hashed as one id per byte.
        for raw in (bytearray(128), memoryview(bytes(128)), bytes(128)):
            with self.assertRaisesRegex(kvhub.Error, "not bytes, bytearray or a memoryview of bytes"):
                kvhub.block_keys("py-bad", spec, raw)
        # A released memoryview is refused with Python's reason (its format was read
        # from freed memory).
        released = memoryview(np.arange(32, dtype=np.int32))
        released.release()
        with self.assertRaisesRegex(kvhub.Error, "released"):
            kvhub.block_keys("py-bad", spec, released)
        # A memoryview of int32 ids is ids (as the array it views).
        ids = np.arange(32, dtype=np.int32)
        self.assertEqual(kvhub.block_keys("py-bad", spec, memoryview(ids)), kvhub.block_keys("py-bad", spec, ids))
        # A structured payload whose field is named with an O holds no objects.
        named = np.zeros(4, dtype=[("Offset", "<i4")])
        self.assertEqual(c.put("py-struct", [b"s" * 16], [named]).stored, 1)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            kvhub.ModelSpec("model=x,layers=0")
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            kvhub.Client("no-port-here")
        # Members may also be a list of addresses.
        with kvhub.Client(self.members.split(","), transport="grpc") as listed:
            self.assertEqual([m["address"] for m in listed.stats()], self.members.split(","))
        with self.assertRaisesRegex(kvhub.Error, "holds a comma"):
            kvhub.Client([self.members])
        with self.assertRaisesRegex(kvhub.Error, r"members\[1\] is not a string"):
            kvhub.Client(["127.0.0.1:1", 7480])
        # Token ids are hashed as int32: ids that are not integers or do not fit are
        # refused, not cast (a cast would hash other ids than the engine's).
        payloads = [b"p" * 100, b"q" * 100]
        with self.assertRaisesRegex(kvhub.Error, "integer token ids; got dtype float32"):
            c.publish("py-bad", spec, tokens.astype(np.float32) + 0.5, payloads)
        with self.assertRaisesRegex(kvhub.Error, "fit int32; got ids from 0 to 4294967296"):
            c.publish("py-bad", spec, np.where(tokens == 31, 2**32, tokens), payloads)
        with self.assertRaisesRegex(kvhub.Error, "got a bool"):
            c.lookup_prefix("py-bad", spec, [5] * 31 + [True])  # numpy would hash it as the id 1
        with self.assertRaisesRegex(kvhub.Error, "got a bool"):
            c.lookup_prefix("py-bad", spec, tuple([np.True_] + [5] * 31))
        with self.assertRaisesRegex(kvhub.Error, "got a bool"):
            c.lookup_prefix("py-bad", spec, collections.deque([5] * 31 + [True]))  # any sequence
        with self.assertRaisesRegex(kvhub.Error, "dtype <U1"):
            c.lookup_prefix("py-bad", spec, ["a"] * 32)
        with self.assertRaisesRegex(kvhub.Error, "fit int32"):
            kvhub.block_keys("py-bad", spec, [-(2**31) - 1] * 16)
        # Overlapping destinations would be filled concurrently: refused whole.
        whole = np.zeros(150, np.uint8)
        with self.assertRaisesRegex(kvhub.Error, "buffers 0 and 1 overlap"):
            c.fetch("py-bad", spec, tokens, [whole[:100], whole[50:150]])
        # Nothing was stored by the failed calls.
        self.assertEqual(c.lookup_prefix("py-bad", spec, tokens).hit_blocks, 0)
        c.close()
        with self.assertRaisesRegex(kvhub.Error, "closed"):
            c.stats()
        with kvhub.Client(self.members, transport="grpc") as scoped:
            self.assertEqual(len(scoped.stats()), 2)
        with self.assertRaisesRegex(kvhub.Error, "closed"):
            scoped.stats()

    def test_threads_share_one_client(self):
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)
        spec = kvhub.ModelSpec(SPEC)
        errors = []

        def worker(w):
            try:
                for i in range(20):
                    tokens = np.full(32, w * 1000 + i, dtype=np.int32)
                    blocks = [payload(w * 100 + i, 2048), payload(w * 100 + i + 50, 2048)]
                    r = c.publish("py-mt", spec, tokens, blocks)
                    assert r.failed == 0, r.errors
                    bufs = [np.zeros(2048, dtype=np.uint8) for _ in range(2)]
                    f = c.fetch("py-mt", spec, tokens, bufs)
                    assert f.valid_blocks == 2, f.errors
                    assert all(np.array_equal(a, b) for a, b in zip(bufs, blocks))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_calls_waiting_on_a_frozen_shard_let_other_threads_run(self):
        # Every call that waits on the network lets go of the GIL: a shard frozen
        # mid-call (SIGSTOP) holds up only the calls that need it, and a program's
        # other threads (its event loop, its scheduler) keep running. Before session
        # 26 transport_stats() waited for a UCX connection being made with the GIL
        # held (this test then fails: both the fetch and transport_stats tick 0-20
        # times in a second instead of ~200).
        shard = KvhubdChild(os.path.join(BIN, "kvhubd"), "--ucx_tls=tcp")
        self.addCleanup(lambda: (os.kill(shard.proc.pid, signal.SIGCONT), shard.stop()))
        spec = kvhub.ModelSpec(SPEC)
        tokens = np.arange(32, dtype=np.int32) + 31000
        blocks = [payload(3100 + i, 4096) for i in range(2)]
        with kvhub.Client(shard.address, transport="grpc") as c:
            self.assertEqual(c.publish("py-frozen", spec, tokens, blocks).failed, 0)
        ticks, stop = [0], threading.Event()

        def ticker():
            while not stop.is_set():
                ticks[0] += 1
                time.sleep(0.005)

        t = threading.Thread(target=ticker)
        t.start()
        self.addCleanup(lambda: (stop.set(), t.join()))

        def timed(what, f, failures=None):
            before, t0 = ticks[0], time.monotonic()
            r = f()
            took, ticked = time.monotonic() - t0, ticks[0] - before
            # A held GIL: (almost) no tick while the call waits. A loaded machine
            # wakes the ticker late, so only a near-silence counts.
            if took > 0.5 and ticked <= took / 0.005 * 0.02:
                (failures.append if failures is not None else self.fail)(f"{what} held the GIL for {took:.2f} s")
            return r, took

        # A client whose UCX connection is made while the shard is frozen: its fetch
        # waits out the control deadline inside Connect. transport_stats does not
        # wait for it (since session 27: before, it waited, holding the client's
        # peer table, so that calls to every other shard waited too).
        os.kill(shard.proc.pid, signal.SIGSTOP)
        c = kvhub.Client(shard.address, transport="ucx", deadline_s=1, data_deadline_s=1)
        bufs = [np.zeros(4096, dtype=np.uint8) for _ in range(2)]
        failures = []
        fetcher = threading.Thread(
            target=lambda: timed("fetch", lambda: c.fetch("py-frozen", spec, tokens, bufs), failures))
        fetcher.start()
        waited, calls = 0.0, 0
        while fetcher.is_alive():  # calls land while the fetch holds the connection
            stats, took = timed("transport_stats", c.transport_stats)
            self.assertEqual(len(stats), 1)
            waited, calls = max(waited, took), calls + 1
            time.sleep(0.01)
        fetcher.join()
        self.assertEqual(failures, [])
        self.assertGreater(calls, 10, "the fetch did not wait on the frozen shard")
        self.assertLess(waited, 0.6, "transport_stats waited for the connection being made (1 s)")
        f, took = timed("fetch", lambda: c.fetch("py-frozen", spec, tokens, bufs))
        self.assertEqual(f.valid_blocks, 0)
        self.assertLess(took, 10, "data_deadline_s=1 did not bound a fetch from a frozen shard")
        c.close()
        # A client with a live UCX connection and session, dropped without close()
        # while its shard is frozen: its deallocation ends it (here in milliseconds;
        # were it to wait, without the GIL on the main thread), and the shard serves on.
        os.kill(shard.proc.pid, signal.SIGCONT)
        c = kvhub.Client(shard.address, transport="ucx", deadline_s=5, data_deadline_s=5)
        self.assertEqual(c.fetch("py-frozen", spec, tokens, bufs).valid_blocks, 2)
        self.assertTrue(c.transport_stats()[0]["transport"].startswith("ucx"), c.transport_stats())
        os.kill(shard.proc.pid, signal.SIGSTOP)
        holder = [c]
        del c
        timed("dealloc", holder.clear)
        os.kill(shard.proc.pid, signal.SIGCONT)
        with kvhub.Client(shard.address, transport="grpc") as c:
            bufs = [np.zeros(4096, dtype=np.uint8) for _ in range(2)]
            self.assertEqual(c.fetch("py-frozen", spec, tokens, bufs).valid_blocks, 2)
            self.assertTrue(all(np.array_equal(a, b) for a, b in zip(bufs, blocks)))

    def test_close_while_other_threads_are_inside_calls(self):
        # Before session 14 close() destroyed the client under the calls in flight
        # (a segmentation fault of the whole process). Now it waits for them; later
        # calls raise "closed". "ucx" moves the bytes over UCX (tcp here); "auto" on a
        # host without RDMA keeps gRPC without opening UCX at all (session 21).
        for transport in ("grpc", "auto", "ucx"):
            c = kvhub.Client(self.members, transport=transport)
            # For a failure before the close() under test below; after it, a no-op.
            self.addCleanup(c.close)
            spec = kvhub.ModelSpec(SPEC)
            tokens = np.arange(16 * 16, dtype=np.int32) + 7000
            blocks = [payload(700 + i, 1 << 20) for i in range(16)]
            self.assertEqual(c.publish("py-close", spec, tokens, blocks).failed, 0)
            started, outcomes = threading.Barrier(4), []

            def worker():
                bufs = [np.zeros(1 << 20, dtype=np.uint8) for _ in range(16)]
                started.wait()
                try:
                    while True:
                        f = c.fetch("py-close", spec, tokens, bufs)
                        assert f.valid_blocks == 16, f.errors
                        assert all(np.array_equal(a, b) for a, b in zip(bufs, blocks))
                except Exception as e:  # the expected end: "closed"
                    outcomes.append(str(e))

            threads = [threading.Thread(target=worker) for _ in range(3)]
            for t in threads:
                t.start()
            started.wait()
            time.sleep(0.2)
            c.close()
            for t in threads:
                t.join()
            self.assertEqual(len(outcomes), 3)
            for o in outcomes:
                self.assertIn("FAILED_PRECONDITION: the client is closed", o)

    def test_interpreter_exits_cleanly_with_daemon_threads_inside_calls(self):
        # A serving process that exits while daemon threads are inside fetch: before
        # session 14 CPython's pthread_exit of those threads unwound out of a
        # destructor and the process aborted ("terminate called ...", exit 134);
        # until session 31 the unwinding ran the call's destructors (Python
        # references) without the GIL. Such a thread now stops where it takes the GIL.
        script = textwrap.dedent("""
            import sys, threading, time
            import numpy as np, kvhub
            c = kvhub.Client(sys.argv[1], transport=sys.argv[2])
            spec = kvhub.ModelSpec(sys.argv[3])
            tokens = np.arange(16 * 16, dtype=np.int32) + 9000
            c.publish("py-exit", spec, tokens, [np.full(256 << 10, i, np.uint8) for i in range(16)])
            def fetch_forever(ids):
                bufs = [np.empty(256 << 10, np.uint8) for _ in range(16)]
                while True:
                    c.fetch("py-exit", spec, ids, bufs)
            # A list makes a fresh token array per call, which the call's frames
            # hold (and would drop without the GIL if unwound at exit).
            for ids in (tokens, tokens.tolist()):
                threading.Thread(target=fetch_forever, args=(ids,), daemon=True).start()
            time.sleep(0.3)
            print("exiting", flush=True)
        """)
        for transport in ("grpc", "auto", "ucx"):
            r = subprocess.run([sys.executable, "-c", script, self.members, transport, SPEC],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, f"{transport}: {r.stdout}{r.stderr}")
            self.assertIn("exiting", r.stdout)
            self.assertNotIn("terminate", r.stderr)

    def test_a_close_while_the_interpreter_exits_does_not_wait_for_daemon_threads(self):
        # An object whose __del__ closes the client, torn down with the module while
        # daemon threads are inside fetch: those threads stop where they take the
        # GIL back and never end their calls, so a close() that waited for them hung
        # the exit for good (until session 33).
        script = textwrap.dedent("""
            import sys, threading, time
            import numpy as np, kvhub
            class Conn:
                def __init__(self, c):
                    self.c = c
                def __del__(self):
                    self.c.close()
            conn = Conn(kvhub.Client(sys.argv[1], transport="grpc"))
            spec = kvhub.ModelSpec(sys.argv[2])
            tokens = np.arange(16 * 16, dtype=np.int32) + 9100
            conn.c.publish("py-exit-close", spec, tokens, [np.full(256 << 10, i, np.uint8) for i in range(16)])
            # The loop has globals of its own: with this module's, the threads would
            # keep conn alive and its __del__ would never run.
            loop = {"np": np}
            exec("def fetch_forever(c, spec, tokens):\\n"
                 "    bufs = [np.empty(256 << 10, np.uint8) for _ in range(16)]\\n"
                 "    while True:\\n"
                 "        c.fetch('py-exit-close', spec, tokens, bufs)\\n", loop)
            for _ in range(2):
                threading.Thread(target=loop["fetch_forever"], args=(conn.c, spec, tokens), daemon=True).start()
            time.sleep(0.3)
            print("exiting", flush=True)
        """)
        for attempt in range(3):  # the window is each call's return: try a few exits
            try:
                r = subprocess.run([sys.executable, "-c", script, self.members, SPEC],
                                   capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                self.fail(f"exit {attempt} hung in close()")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("exiting", r.stdout)

    def test_a_shard_whose_name_moves_to_another_address_is_found_again_quickly(self):
        # A Kubernetes pod rescheduled to another node keeps its DNS name and gets a
        # new address. gRPC re-resolved a failing channel's name at most every 30 s,
        # so clients missed on that shard for up to 30 s after it was back (27 s
        # measured); now they re-resolve after 1 s. The test gives itself its own
        # /etc/hosts in a private mount namespace.
        if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
            self.skipTest("needs root, unshare(1) and mount(8) for a private /etc/hosts")
        probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest(f"unshare --mount is not permitted here: {probe.stderr.decode().strip()}")
        script = textwrap.dedent("""
            import os, select, socket, subprocess, sys, tempfile, time
            import kvhub
            kvhubd = sys.argv[1]
            procs = []
            with tempfile.NamedTemporaryFile("w", delete=False) as hosts:
                pass
            def point_at(ip):
                with open(hosts.name, "w") as f:  # in place: the bind mount keeps the inode
                    f.write(f"127.0.0.1 localhost\\n{ip} kvhub-moving-shard\\n")
            def start(ip):
                p = subprocess.Popen([kvhubd, f"--grpc_address={ip}:{port}", f"--http_address={ip}:0",
                                      "--capacity_bytes=64MiB", "--max_block_bytes=1MiB",
                                      "--try_hugepages=false", "--log_level=warn"],
                                     stdout=subprocess.PIPE, text=True)
                procs.append(p)
                assert select.select([p.stdout], [], [], 30)[0], "kvhubd did not start within 30 s"
                assert p.stdout.readline().startswith("kvhubd ready"), "kvhubd did not start"
                return p
            try:
                point_at("127.0.0.1")
                subprocess.run(["mount", "--bind", hosts.name, "/etc/hosts"], check=True)
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                first = start("127.0.0.1")
                with kvhub.Client(f"kvhub-moving-shard:{port}", transport="grpc") as c:
                    assert c.stats()[0]["error"] is None
                    first.kill()
                    first.wait()
                    for _ in range(8):  # the channel fails and re-resolves (to the old address)
                        assert c.stats()[0]["error"] is not None
                        time.sleep(0.2)
                    point_at("127.0.0.2")
                    second = start("127.0.0.2")
                    t0 = time.time()
                    while c.stats()[0]["error"] is not None and time.time() - t0 < 25:
                        time.sleep(0.1)
                    waited = time.time() - t0
                second.terminate()
                second.wait()
                print(f"found the moved shard after {waited:.1f} s")
                sys.exit(0 if waited < 10 else 1)
            finally:  # no kvhubd left running, no file left in the temp directory
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                    p.wait()
                    p.stdout.close()
                os.unlink(hosts.name)
        """)
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script,
                            os.path.join(BIN, "kvhubd")], capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_codecs_end_to_end(self):
        spec = kvhub.ModelSpec(SPEC)  # 2 layers, 2 kv heads, head_dim 64, bf16, 16-token blocks

        def bf16(x):  # float32 -> bf16 bit patterns (round toward zero)
            return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)

        def as_f32(b):
            return (b.astype(np.uint32) << 16).view(np.float32)

        rng = np.random.default_rng(7)
        kv = [bf16(rng.standard_normal((2, 2, 16, 2, 64))) for _ in range(4)]
        for codec in ("raw", "lossless"):
            block = kvhub.encode(kv[0], spec, base_position=0, codec=codec)
            self.assertTrue(np.array_equal(kvhub.decode(block), kv[0]), codec)
        # An array that crossed a process boundary has a dtype object of its own; it
        # encodes the same. A big-endian one is still refused.
        unpickled = pickle.loads(pickle.dumps(kv[0]))
        self.assertEqual(kvhub.encode(unpickled, spec, base_position=0, codec="raw"),
                         kvhub.encode(kv[0], spec, base_position=0, codec="raw"))
        with self.assertRaisesRegex(kvhub.Error, "uint16"):
            kvhub.encode(kv[0].astype(">u2"), spec, base_position=0, codec="raw")
        block = kvhub.encode(kv[1], spec, base_position=16, codec="kivi4")
        info = kvhub.inspect(block)
        self.assertEqual((info["codec"], info["tokens"], info["base_position"], info["layers"]), ("kivi4", 16, 16, 2))
        self.assertEqual(info["fingerprint"], spec.fingerprint)
        self.assertLess(len(block), kv[1].nbytes / 2)  # 4-bit data, scales, a bf16 sink token, header
        got = as_f32(kvhub.decode(block))
        want = as_f32(kv[1])
        self.assertLess(np.linalg.norm(got - want) / np.linalg.norm(want), 0.15)

        # Publish kivi4 blocks, fetch them back into buffers and decode: identical.
        c = kvhub.Client(self.members, transport="grpc")
        self.addCleanup(c.close)
        tokens = np.arange(64, dtype=np.int32) + 5000
        blocks = [kvhub.encode(kv[i], spec, base_position=16 * i, codec="kivi4") for i in range(4)]
        self.assertEqual(c.publish("py-codec", spec, tokens, blocks).stored, 4)
        # Buffers sized before the blocks are seen: encoded_size is exact for the
        # fixed-size codecs (the first block holds the sink token).
        for i in range(4):
            self.assertEqual(kvhub.encoded_size(spec, codec="kivi4", base_position=16 * i), len(blocks[i]))
        self.assertEqual(kvhub.encoded_size(spec, codec="fp8", tokens=5),
                         len(kvhub.encode(kv[0][:, :, :5].copy(), spec, codec="fp8")))
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT.*data-dependent"):
            kvhub.encoded_size(spec, codec="lossless")
        # No size for a block encode refuses (kivi4 of fp16 data had one), nor for a
        # position beyond 2^52.
        spec16 = kvhub.ModelSpec(SPEC.replace("dtype=bf16", "dtype=fp16"))
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT.*takes bf16 input"):
            kvhub.encoded_size(spec16, codec="kivi4")
        self.assertGreater(kvhub.encoded_size(spec16, codec="raw"), 0)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT.*base_position"):
            kvhub.encoded_size(spec, codec="kivi4", base_position=2**53)
        bufs = [bytearray(kvhub.encoded_size(spec, codec="kivi4", base_position=16 * i)) for i in range(4)]
        self.assertEqual(c.fetch("py-codec", spec, tokens, bufs).valid_blocks, 4)
        for i in range(4):
            self.assertTrue(np.array_equal(kvhub.decode(bufs[i]), kvhub.decode(blocks[i])))
        # Or slabs larger than any block: decode the part fetch filled (sizes).
        slabs = [bytearray(len(blocks[i]) + 4096) for i in range(4)]
        f = c.fetch("py-codec", spec, tokens, slabs)
        self.assertEqual((f.valid_blocks, list(f.sizes)), (4, [len(b) for b in blocks]))
        for i in range(4):
            self.assertTrue(np.array_equal(kvhub.decode(memoryview(slabs[i])[:f.sizes[i]]), kvhub.decode(blocks[i])))
        with self.assertRaisesRegex(kvhub.Error, "trailing"):
            kvhub.decode(slabs[0])  # the whole slab is not a block

        # Bad input: a clear error, never a wrong array.
        with self.assertRaisesRegex(kvhub.Error, "shape"):
            kvhub.encode(kv[0][:, :1], spec)
        with self.assertRaisesRegex(kvhub.Error, "uint16"):
            kvhub.encode(kv[0].astype(np.float32), spec)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            kvhub.encode(kv[0], spec, codec="kivi3")
        corrupt = bytearray(blocks[2])
        corrupt[len(corrupt) // 2] ^= 0x40
        with self.assertRaisesRegex(kvhub.Error, "DATA_LOSS|checksum"):
            kvhub.decode(corrupt)
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT|DATA_LOSS"):
            kvhub.decode(bytes(blocks[2][:100]))
        # A reversed view's pointer is its last byte: reading forward from it left the
        # buffer. Views that are not one C-ordered run are refused.
        with self.assertRaisesRegex(kvhub.Error, "C-contiguous"):
            kvhub.decode(np.frombuffer(blocks[2], np.uint8)[::-1])
        with self.assertRaisesRegex(kvhub.Error, "C-contiguous"):
            kvhub.inspect(memoryview(blocks[2])[::2])
        # The header says how big the array is: a cap, before anything is allocated.
        with self.assertRaisesRegex(kvhub.Error, "RESOURCE_EXHAUSTED.*max_raw_bytes"):
            kvhub.decode(blocks[2], max_raw_bytes=1000)
        self.assertTrue(np.array_equal(kvhub.decode(blocks[2], max_raw_bytes=kv[2].nbytes), kvhub.decode(blocks[2])))

    def test_an_interrupt_while_reading_tokens_is_not_turned_into_an_error(self):
        class Interrupting:
            def __array__(self, *args, **kwargs):
                raise KeyboardInterrupt()

        spec = kvhub.ModelSpec(SPEC)
        with self.assertRaises(KeyboardInterrupt):
            kvhub.block_keys("py-ns", spec, Interrupting())
        with self.assertRaisesRegex(kvhub.Error, "INVALID_ARGUMENT"):
            kvhub.block_keys("py-ns", spec, ["not", "ids"])

    def test_tokens(self):
        token = "py-test-token-0123456789"
        with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as f:
            f.write(f"{token} py-auth\n")
        try:
            shard = KvhubdChild(os.path.join(BIN, "kvhubd"), f"--auth_tokens_file={f.name}")
            try:
                ks, data = [b"a" * 16], [b"secret" * 100]
                with kvhub.Client(shard.address, transport="grpc") as anonymous:
                    r = anonymous.put("py-auth", ks, data)
                self.assertEqual(r.stored, 0)
                self.assertTrue(r.errors[0].startswith("UNAUTHENTICATED"), r.errors)
                with kvhub.Client(shard.address, transport="grpc", auth_token=token) as c:
                    self.assertEqual(c.put("py-auth", ks, data).stored, 1)
                    r = c.put("someone-else", ks, data)
                self.assertTrue(r.errors[0].startswith("PERMISSION_DENIED"), r.errors)
            finally:
                self.assertEqual(shard.stop(), 0)
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)

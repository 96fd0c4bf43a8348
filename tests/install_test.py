#!/usr/bin/python3
"""kvhub as an installed package, used the way docs/client.md tells users to.

1. `cmake --install BUILD --prefix TMP` (what `make install PREFIX=TMP` runs);
2. configures and builds tests/install_consumer, a program outside the tree that
   uses find_package(kvhub) and links kvhub::client and kvhub::codec;
3. starts the *installed* kvhubd and runs the program against it (encode, publish,
   look up, fetch, decode, byte-compare), then asks the installed `kvhub` CLI for the
   shard's stats;
4. imports the installed Python package with Debian's interpreter and does a
   publish/lookup/fetch round trip through it.

  install_test.py --build BUILD --source SRC [--cxx COMPILER] [--cxx-flags FLAGS]
                  [--python-env NAME=VALUE ...]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "testing"))
from kvhubd_child import KvhubdChild  # noqa: E402

ARGS = None
# What cmake/KvhubInstall.cmake installs into bin/: kvhubd and the tools.
INSTALLED_BINARIES = ["kvhub", "kvhub-bench", "kvhub-codec", "kvhub-replay", "kvhub-stress", "kvhubd"]


def run(cmd, **kw):
    """Runs cmd; on failure the test fails with its output."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-6000:]}")
    return p.stdout




class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Class cleanups run even when setUpClass fails (an install that fails, a shard
        # that does not start), last registered first: the shard stops, then the
        # temporary prefix goes.
        cls.tmp = tempfile.mkdtemp(prefix="kvhub-install-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.prefix = os.path.join(cls.tmp, "prefix")
        run(["cmake", "--install", ARGS.build, "--prefix", cls.prefix])
        cls.shard = KvhubdChild(os.path.join(cls.prefix, "bin", "kvhubd"))
        cls.addClassCleanup(cls.stop_shard, cls.shard)

    @staticmethod
    def stop_shard(shard):
        code = shard.stop()
        if code != 0:
            raise AssertionError(f"installed kvhubd exited {code} on SIGTERM")

    def test_layout_is_what_the_docs_promise(self):
        # bin/ holds exactly what cmake/KvhubInstall.cmake installs: no tool missing, no
        # test or bench binary of the build tree along with them.
        self.assertEqual(sorted(os.listdir(os.path.join(self.prefix, "bin"))), INSTALLED_BINARIES)
        for rel in [*(f"bin/{b}" for b in INSTALLED_BINARIES),
                    "include/kvhub/client/client.h", "include/kvhub/codec/codec.h", "include/kvhub/common/version.h",
                    "include/kvhub/kvhub/v1/kvhub.pb.h", "lib/cmake/kvhub/kvhubConfig.cmake",
                    "lib/cmake/kvhub/kvhubConfigVersion.cmake", "share/kvhub/proto/kvhub/v1/kvhub.proto"]:
            self.assertTrue(os.path.exists(os.path.join(self.prefix, rel)), rel)
        for root, _, files in os.walk(os.path.join(self.prefix, "include")):
            for f in files:
                self.assertTrue(f.endswith(".h"), os.path.join(root, f))
                self.assertNotIn("_test", f, os.path.join(root, f))

    def test_a_program_built_with_find_package_talks_to_the_installed_kvhubd(self):
        build = os.path.join(self.tmp, "consumer-build")
        configure = ["cmake", "-S", os.path.join(ARGS.source, "tests", "install_consumer"), "-B", build,
                     f"-DCMAKE_PREFIX_PATH={self.prefix}", "-DCMAKE_BUILD_TYPE=Release"]
        if ARGS.cxx:
            configure.append(f"-DCMAKE_CXX_COMPILER={ARGS.cxx}")
        if ARGS.cxx_flags:
            configure += [f"-DCMAKE_CXX_FLAGS={ARGS.cxx_flags}", f"-DCMAKE_EXE_LINKER_FLAGS={ARGS.cxx_flags}"]
        run(configure)
        run(["cmake", "--build", build, "-j", "2"])
        out = run([os.path.join(build, "consumer"), self.shard.address])
        self.assertIn("consumer ok: published 4 stored 4, hit 4 blocks (64 tokens), fetched and decoded 4", out)
        # The installed CLI sees what the program stored.
        stats = run([os.path.join(self.prefix, "bin", "kvhub"), "stats", "--addr", self.shard.address])
        self.assertRegex(stats, r"tier host .* blocks=4 ", stats)

    def test_a_version_the_package_is_not_compatible_with_is_refused(self):
        project = os.path.join(self.tmp, "too-new")
        os.makedirs(project, exist_ok=True)
        with open(os.path.join(project, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.25)\nproject(p LANGUAGES CXX)\n"
                    "find_package(kvhub 9.0 REQUIRED)\n")
        p = subprocess.run(["cmake", "-S", project, "-B", os.path.join(project, "build"),
                            f"-DCMAKE_PREFIX_PATH={self.prefix}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("kvhub", p.stdout)
        self.assertIn("9.0", p.stdout)

    def test_the_installed_python_package_works_from_its_own_directory(self):
        site = [os.path.join(root) for root, dirs, _ in os.walk(os.path.join(self.prefix, "lib"))
                if os.path.basename(root) == "dist-packages"]
        self.assertEqual(len(site), 1, site)
        script = textwrap.dedent(f"""
            import os, numpy as np, kvhub
            assert kvhub.__file__.startswith({self.prefix!r}), kvhub.__file__
            c = kvhub.Client({self.shard.address!r})
            spec = kvhub.ModelSpec("model=install-py,layers=1,kv_heads=1,head_dim=64,dtype=bf16,"
                                   "rope_base=10000,block_tokens=16")
            tokens = np.arange(32, dtype=np.int32)
            payloads = [bytes([i]) * 1000 for i in (1, 2)]
            c.publish("install-py", spec, tokens, payloads)
            hit = c.lookup_prefix("install-py", spec, tokens)
            assert hit.hit_blocks == 2, hit.hit_blocks
            bufs = [np.empty(1000, np.uint8) for _ in range(2)]
            got = c.fetch("install-py", spec, tokens, bufs)
            assert got.valid_blocks == 2, (got.valid_blocks, got.errors)
            for i, (buf, want) in enumerate(zip(bufs, payloads, strict=True)):
                assert bytes(buf) == want, f"block {{i}} differs from what was published"
            c.close()
            print("python ok")
            """)
        env = dict(os.environ, PYTHONPATH=site[0])
        env.update(kv.split("=", 1) for kv in ARGS.python_env)
        out = run([sys.executable, "-c", script], env=env, cwd=self.tmp)
        self.assertIn("python ok", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--cxx", default="")
    parser.add_argument("--cxx-flags", default="")
    parser.add_argument("--python-env", action="append", default=[],
                        help="NAME=VALUE for the interpreter that imports the package (sanitizer runtimes)")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest])

# kvhub top-level entry points. See README.md.
#   make build   install deps, configure, build into build/ (binaries in build/bin/)
#   make test    build, then run every test (what CI runs)
#   make demo    build, start a local 3-shard cluster, run a workload, print the numbers, stop
#   make install build, then install binaries, headers, libraries, find_package(kvhub) and
#                the Python package under PREFIX (default /usr/local)
#   make stress  build, then kvhub-stress with faults on each data plane (STRESS_SECONDS each)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

PREFIX ?= /usr/local

.PHONY: deps configure build install test demo stress tsa asan tsan fuzz clean

deps:
	./scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DKVHUB_REQUIRE_ALL=ON $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# After the run, the test cases skipped and why (no GPU here, for one).
test: build
	cd $(BUILD_DIR) && { ctest --output-on-failure --no-tests=error -j $(JOBS) --timeout 600; rc=$$?; \
	    $(CURDIR)/scripts/skipped-tests.sh Testing/Temporary/LastTest.log || true; exit $$rc; }

demo: build
	./scripts/demo.sh $(BUILD_DIR)

# Longer fault runs than make test's (docs/operations.md, "Stress test"): each data plane
# for STRESS_SECONDS with shard kills and freezes, client processes killed mid-operation
# and bad requests; stops at the first run that finds a violation.
STRESS_SECONDS ?= 120
stress: build
	$(BUILD_DIR)/bin/kvhub-stress --seconds $(STRESS_SECONDS) --transport grpc --kill_every_ms 2000 --stop_every_ms 3000 --client_procs 2 --kill_client_every_ms 1500
	$(BUILD_DIR)/bin/kvhub-stress --seconds $(STRESS_SECONDS) --transport ucx --ucx_tls tcp --kill_every_ms 2000 --stop_every_ms 3000 --client_procs 2 --kill_client_every_ms 1500
	$(BUILD_DIR)/bin/kvhub-stress --seconds $(STRESS_SECONDS) --transport ucx --ucx_tls posix,cma --kill_every_ms 2000 --stop_every_ms 3000 --client_procs 2 --kill_client_every_ms 1500 --wedge_every_ms 4000
	$(BUILD_DIR)/bin/kvhub-stress --seconds $(STRESS_SECONDS) --transport ucx --ucx_tls tcp,posix,cma --kill_every_ms 2000 --stop_every_ms 3000 --client_procs 2 --kill_client_every_ms 1500 --wedge_every_ms 4000

# clang with -Wthread-safety: every lock annotation is checked.
tsa: deps
	CC=clang CXX=clang++ cmake -S . -B build-tsa -G Ninja
	cmake --build build-tsa -j $(JOBS)

asan: deps
	cmake -S . -B build-asan -G Ninja -DKVHUB_SANITIZE=asan -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# TSan: Debian's abseil is not built with -fsanitize=thread, so TSan cannot see
# absl::Mutex and reports its critical sections as races (seen on day 1 in
# client_thread_pool_test and storage_block_store_concurrency_test, every report
# inside absl::Mutex/Condition). Meaningful only with an instrumented abseil.
tsan: deps
	CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja -DKVHUB_SANITIZE=tsan
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j $(JOBS) -L concurrency

# Fuzzing: libFuzzer + ASan/UBSan with clang in build-fuzz. The block decoder
# (codec) gets at least 1M inputs from the committed seed corpus; the service
# (cachesvc/fuzz: request sequences checked against a reference model) gets
# SERVICE_FUZZ_SECONDS and the client's decoders of shard responses (client/fuzz)
# WIRE_FUZZ_SECONDS. `make test` runs short replays of all three entry points
# (codec_fuzz_replay_test, cachesvc_fuzz_replay_test, client_wire_fuzz_replay_test).
FUZZ_RUNS ?= 1000000
SERVICE_FUZZ_SECONDS ?= 600
WIRE_FUZZ_SECONDS ?= 120
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DKVHUB_SANITIZE=asan -DKVHUB_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS) --target codec_decode_fuzzer cachesvc_service_fuzzer client_wire_fuzzer
	mkdir -p build-fuzz/corpus build-fuzz/service-corpus build-fuzz/wire-corpus
	cp codec/fuzz/corpus/* build-fuzz/corpus/
	cp cachesvc/fuzz/corpus/* build-fuzz/service-corpus/
	build-fuzz/bin/codec_decode_fuzzer -runs=$(FUZZ_RUNS) -max_len=65536 -timeout=10 build-fuzz/corpus
	build-fuzz/bin/cachesvc_service_fuzzer -max_total_time=$(SERVICE_FUZZ_SECONDS) -max_len=4096 -len_control=0 \
	    -timeout=10 -print_final_stats=1 build-fuzz/service-corpus
	build-fuzz/bin/client_wire_fuzzer -max_total_time=$(WIRE_FUZZ_SECONDS) -max_len=4096 -len_control=0 \
	    -timeout=10 -print_final_stats=1 build-fuzz/wire-corpus

clean:
	rm -rf build build-tsa build-asan build-tsan build-fuzz build-codec-fuzz

# kvhub top-level entry points. See README.md.
#   make build   install deps, configure, build into build/ (binaries in build/bin/)
#   make test    build, then run every test (what CI runs)
#   make demo    build, start a local 3-shard cluster, run a workload, print the numbers, stop
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps configure build test demo tsa asan tsan fuzz clean

deps:
	./scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	./scripts/demo.sh $(BUILD_DIR)

# clang with -Wthread-safety: every lock annotation is checked.
tsa: deps
	CC=clang CXX=clang++ cmake -S . -B build-tsa -G Ninja
	cmake --build build-tsa -j $(JOBS)

asan: deps
	cmake -S . -B build-asan -G Ninja -DKVHUB_SANITIZE=asan -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

tsan: deps
	CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja -DKVHUB_SANITIZE=tsan
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j $(JOBS) -L concurrency

clean:
	rm -rf build build-tsa build-asan build-tsan

# chorus — thin wrapper over CMake + CTest. See README.md.
#   make run    install deps, build, start the hub on its defaults (127.0.0.1:4000, ./data)
#   make test   install deps, build (normal + ASan/UBSan), run every suite through ctest, short fuzz runs
#   make fuzz   build the libFuzzer targets (clang)
#   make bench  run the benchmarks against chorus and its peers; writes docs/BENCHMARKS.md
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
WERROR ?= $(if $(CI),ON,OFF)
ARGS ?=

.PHONY: all deps build run test test-fast test-asan fuzz fuzz-run bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCH_WERROR=$(WERROR) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/chorus serve $(ARGS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCH_WERROR=$(WERROR) \
	  -DCH_SANITIZE=address,undefined >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCH_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz-run: fuzz
	@scripts/fuzz-run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test: test-fast test-asan fuzz-run

bench: build
	@bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

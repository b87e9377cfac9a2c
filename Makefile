# kiln — thin wrapper over CMake. The two commands a newcomer needs:
#   make demo   install what is missing, fetch the demo model, bake it, inspect it
#   make test   build and run every test (C unit tests, then the Python oracle tests)
BUILD ?= build
JOBS ?= 2
PY := .venv/bin/python

.PHONY: all deps pyenv models test test-c test-py test-sanitize test-tsan fuzz demo clean

all: $(BUILD)/kiln

deps:
	@scripts/deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

$(BUILD)/kiln: deps $(BUILD)/Makefile FORCE
	cmake --build $(BUILD) -j$(JOBS)

FORCE:

pyenv:
	@scripts/pyenv.sh

models: pyenv
	@scripts/fetch_models.sh all >/dev/null

test: all pyenv models
	@scripts/run_tests.sh $(BUILD)

# The same tests on an ASan + UBSan build.
test-sanitize: deps pyenv models
	cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON >/dev/null
	cmake --build build-san -j$(JOBS)
	@scripts/run_tests.sh build-san

# Many sessions on one model from many threads, under ThreadSanitizer.
test-tsan: deps pyenv models
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON >/dev/null
	cmake --build build-tsan -j$(JOBS) --target kiln kn_sessions_tool
	KILN_BUILD=$(CURDIR)/build-tsan KILN_TSAN=1 KILN_SHARED=$${KILN_SHARED:-$(CURDIR)/../shared} \
	  .venv/bin/python -m pytest -q -p no:cacheprovider tests/py/test_sessions.py

# libFuzzer targets (one per parser: tests/fuzz/fuzz_*.c), each run for FUZZ_SECONDS.
FUZZ_SECONDS ?= 15
fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKILN_FUZZ=ON >/dev/null
	cmake --build build-fuzz -j$(JOBS)
	@scripts/run_fuzz.sh build-fuzz $(FUZZ_SECONDS)

demo: all pyenv models
	@scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-san build-tsan build-fuzz

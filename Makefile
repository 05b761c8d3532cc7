# layerlens — the two README commands are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench reliability lint clean system-deps

install: $(STAMP)

# torch first and alone, pinned exactly: pip then takes the local CPU wheel
# where one is configured, instead of resolving a CUDA build from the index.
# The client before the full package, which depends on it (it is not on PyPI).
$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e "./client[check]"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/layerlens demo --out demo-output

# Headless Chromium + chromedriver for tests/e2e/test_report_page.py (skipped without them,
# failed under CI=true): installed with apt-get when root, otherwise how to install them.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver) \
		|| echo "make system-deps: could not install chromium chromium-driver"; \
	else echo "chromium/chromedriver missing (the browser test will skip);" \
		"install them with: sudo apt-get install chromium chromium-driver"; fi

# --durations: the slowest tests end every run's log (the suite should stay under ~20 min
# on 2 cores; on 2026-11-22 it took 18-19.5 min, `make demo`'s test alone ~3 min)
test: install system-deps
	$(BIN)/python -m pytest --durations=15

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python -m benchmarks

# Faults injected for real (worker SIGKILL, Redis killed, PostgreSQL stopped, jobs over
# limits), the whole ONNX test corpus and the sandbox tests; then one table of what
# happened. Stops and starts this machine's PostgreSQL and Redis (root).
RELIABILITY_LOG := .reliability.jsonl
reliability: install
	rm -f $(RELIABILITY_LOG)
	LAYERLENS_RELIABILITY_LOG=$(CURDIR)/$(RELIABILITY_LOG) LAYERLENS_FUZZ_ALL=1 \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/workers/test_sandbox.py \
		tests/e2e/test_limits_e2e.py tests/e2e/test_faults_e2e.py \
		tests/e2e/test_outages_e2e.py tests/e2e/test_onnx_corpus_e2e.py \
		tests/service/test_openapi_fuzz.py; \
	status=$$?; $(BIN)/python -m tests.e2e.reliability $(RELIABILITY_LOG) || status=1; \
	exit $$status

lint: install
	$(BIN)/ruff check layerlens app infra service workers migrations client tests benchmarks
	$(BIN)/mypy layerlens app infra service workers client/layerlens_client

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache $(RELIABILITY_LOG)

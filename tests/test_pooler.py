"""Through PgBouncer in transaction mode with a pool of one server connection: the tap finishes,
emits what a direct connection gives, leaves nothing on the server connection for the next client,
and LOG_BASED stops with one line asking for a direct connection.

A pool of one means the tap's sessions and any other client take turns on one server connection:
a second session the tap opened while its first holds a transaction would wait for ever (the
pool's query_wait_timeout is off), and anything a tap transaction left on the connection reaches
the next client. The database's defaults differ from every setting the tap pins, so a leak shows.
"""

from __future__ import annotations

import json
import os
import subprocess

import pgcluster
import pytest
from conftest import records_of, select_all, states_of

from tap_postgres.connection import SESSION_SETTINGS

# what a deadlock costs before the test fails; a run takes well under a second
RUN_TIMEOUT = 30
POOL_OF_ONE = {"pool_mode": "transaction", "default_pool_size": "1", "query_wait_timeout": "0"}
# the database's defaults, none of them the tap's
DATABASE_DEFAULTS = {
    "TimeZone": "America/New_York",
    "IntervalStyle": "postgres_verbose",
    "DateStyle": "SQL, DMY",
    "extra_float_digits": "1",
}


@pytest.fixture(scope="module")
def catalog(db):
    for name, value in DATABASE_DEFAULTS.items():
        db.execute(f"ALTER DATABASE {db.name} SET {name} = '{value}'")
    columns = "at timestamptz, day date, span interval, ratio float8"
    db.execute(f"CREATE TABLE keyed (id int PRIMARY KEY, {columns})")
    db.execute(f"CREATE TABLE keyless ({columns})")
    rows = "SELECT g, '2024-03-01 12:00+02'::timestamptz + g * interval '1 hour', date '2024-01-31' + g, "
    rows += "make_interval(days => g, secs => g / 7.0), 1.0 / g FROM generate_series(1, 45) g"
    db.execute(f"INSERT INTO keyed {rows}")
    db.execute(f"INSERT INTO keyless SELECT at, day, span, ratio FROM ({rows}) AS r(id, at, day, span, ratio)")
    db.execute("CREATE TABLE keyed_too (id int PRIMARY KEY)")
    db.execute("INSERT INTO keyed_too SELECT generate_series(1, 25)")
    db.execute("CREATE TABLE app_writes (note text)")
    return db.discover()


@pytest.fixture(scope="module")
def pooler(server, catalog):
    """PgBouncer in transaction mode with one server connection; yields its port."""
    with pgcluster.pgbouncer(server.port, **POOL_OF_ONE) as port:
        yield port


def run(db, config: dict, *args: str, check: bool = True) -> tuple[list[dict], str, int]:
    """Run the tap with a timeout, so a deadlock fails the test; return its messages, stderr and exit code."""
    lines, stderr, code = db.run_tap(*args, config=config, check=check, timeout=RUN_TIMEOUT)
    return [json.loads(line) for line in lines], stderr, code


def discover_failing(db, config: dict) -> tuple[list, str, int]:
    """Run a --discover expected to fail; return no messages, its stderr and its exit code."""
    _, stderr, code = db.run_tap("--discover", config=config, check=False, timeout=RUN_TIMEOUT)
    return [], stderr, code


def discover(db, config: dict) -> dict:
    lines, _, _ = db.run_tap("--discover", config=config, timeout=RUN_TIMEOUT)
    return json.loads("\n".join(lines))


def sync(db, config: dict, catalog: dict, state: dict | None = None, check: bool = True):
    """Run a sync in batches of 10 keys (a helper session renders every other one where it can)."""
    args = ["--catalog", str(db.write_json("catalog.json", catalog))]
    if state is not None:
        args += ["--state", str(db.write_json("state.json", state))]
    return run(db, dict(config, itersize=10), *args, check=check)


def records_by_stream(messages: list[dict]) -> dict[str, list[dict]]:
    return {stream: records_of(messages, stream) for stream in sorted({m["stream"] for m in messages if "stream" in m})}


def psql(db, port: int, *statements: str) -> subprocess.CompletedProcess:
    """Run each statement in a transaction of its own with psql on `port`, on past a failing one."""
    command = [str(pgcluster.bin_dir() / "psql"), "-AtX", "-h", db.server.host, "-p", str(port), "-U", db.server.user]
    command += ["-d", db.name, *(arg for statement in statements for arg in ("-c", statement))]
    env = {**os.environ, "PGPASSWORD": db.server.password}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def through(db, port: int) -> dict:
    return dict(db.config, port=port)


def test_discovery_full_table_and_incremental_finish_on_a_pool_of_one_and_match_a_direct_run(db, catalog, pooler):
    assert discover(db, through(db, pooler)) == catalog

    full_table = select_all(json.loads(json.dumps(catalog)), only={"public-keyed", "public-keyless"})
    direct, _, _ = sync(db, db.config, full_table)
    pooled, stderr, _ = sync(db, through(db, pooler), full_table)
    assert records_by_stream(pooled) == records_by_stream(direct)
    assert [r["id"] for r in records_of(pooled, "public-keyed")] == list(range(1, 46))
    assert len(records_of(pooled, "public-keyless")) == 45
    # the second session was refused up front, not after a wait that failed
    assert "the same server connection" in stderr and "WARNING" not in stderr

    incremental = select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", "id", only={"public-keyed"})
    direct, _, _ = sync(db, db.config, incremental)
    pooled, _, _ = sync(db, through(db, pooler), incremental)
    assert records_of(pooled) == records_of(direct) and len(records_of(pooled)) == 45
    state = states_of(pooled)[-1]
    db.execute("INSERT INTO keyed VALUES (46, now(), current_date, '1 day', 0.5)")
    try:
        pooled, _, _ = sync(db, through(db, pooler), incremental, state)
        assert [r["id"] for r in records_of(pooled)] == [45, 46]
    finally:
        db.execute("DELETE FROM keyed WHERE id = 46")


def test_full_table_finishes_on_a_session_mode_pool_of_one_waiting_once_for_a_second_session(db, server, catalog):
    full_table = select_all(json.loads(json.dumps(catalog)), only={"public-keyed", "public-keyed_too"})
    direct, _, _ = sync(db, db.config, full_table)
    session_mode = {**POOL_OF_ONE, "pool_mode": "session"}
    with pgcluster.pgbouncer(server.port, **session_mode) as port:
        pooled, stderr, _ = sync(db, dict(through(db, port), connect_timeout=2), full_table)
    assert records_by_stream(pooled) == records_by_stream(direct)
    assert [r["id"] for r in records_of(pooled, "public-keyed_too")] == list(range(1, 26))
    # the helper's first statement waited in the pool's queue for the session the copy holds
    assert stderr.count("got no server connection within 2 s (connect_timeout)") == 1


def test_the_next_client_on_the_same_server_connection_gets_the_database_defaults(db, catalog, pooler):
    discover(db, through(db, pooler))
    sync(db, through(db, pooler), select_all(json.loads(json.dumps(catalog)), only={"public-keyed"}))
    sync(
        db, through(db, pooler), select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", "id", only={"public-keyed"})
    )

    # psql, not psycopg2: psycopg2 sets DateStyle to ISO when it connects, a session SET (the tap's
    # sessions too), which PgBouncer undoes for the next client, as it tracks DateStyle per client
    client = psql(
        db,
        pooler,
        "SELECT pg_backend_pid()",
        *(f"SHOW {name}" for name in [*DATABASE_DEFAULTS, "default_transaction_read_only"]),
        "INSERT INTO app_writes VALUES ('after the tap')",
    )
    server_pid, *shown, read_only = client.stdout.splitlines()[: 2 + len(DATABASE_DEFAULTS)]
    settings = dict(zip(DATABASE_DEFAULTS, shown, strict=True))
    # the pool's one server connection: the one every tap session used too
    pooled_backends = db.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    )
    assert pooled_backends == [(int(server_pid),)]
    assert settings == DATABASE_DEFAULTS
    assert all(SESSION_SETTINGS[name] != value for name, value in settings.items())
    assert read_only == "off"
    assert client.returncode == 0, client.stderr
    assert db.query("SELECT note FROM app_writes") == [("after the tap",)]


@pytest.mark.parametrize("ignored", ["", "replication, options"], ids=["plain", "ignoring-replication"])
def test_log_based_through_a_pooler_asks_for_a_direct_connection(db, server, catalog, ignored):
    db.create_slot()
    log_based = select_all(json.loads(json.dumps(catalog)), "LOG_BASED", only={"public-keyed"})
    try:
        with pgcluster.pgbouncer(server.port, **POOL_OF_ONE, ignore_startup_parameters=ignored) as port:
            messages, stderr, code = sync(db, through(db, port), log_based, check=False)
    finally:
        db.drop_slots()
    assert code != 0
    assert not records_of(messages)
    stderr = stderr.strip().splitlines()
    assert stderr[-1].startswith("tap-postgres: error: LOG_BASED needs a direct connection to PostgreSQL")
    assert 'point "host" and "port" at the server' in stderr[-1]
    assert not any("Traceback" in line for line in stderr)


def test_statement_mode_gets_one_line_naming_the_pool_modes_that_work(db, server, catalog):
    full_table = select_all(json.loads(json.dumps(catalog)), only={"public-keyed"})
    with pgcluster.pgbouncer(server.port, **{**POOL_OF_ONE, "pool_mode": "statement"}) as port:
        for outcome in (discover_failing(db, through(db, port)), sync(db, through(db, port), full_table, check=False)):
            messages, stderr, code = outcome
            assert code != 0 and not records_of(messages)
            assert (
                stderr.strip()
                .splitlines()[-1]
                .startswith(f"tap-postgres: error: 127.0.0.1:{port} closed the connection at its first transaction")
            )
            assert "pool_mode = transaction or session" in stderr and "Traceback" not in stderr

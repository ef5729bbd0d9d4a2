"""A table another session holds ACCESS EXCLUSIVE: the tap says who blocks it, gives up at lock_timeout,
and SIGTERM or Ctrl-C stops it at once, with the last STATE written and one line."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time

import pgcluster
import pytest
from conftest import TAP, select_all

from tap_postgres.locks import Blocker, describe_blockers

integration = pytest.mark.integration

HOLDER = "lock-holder"
# a run that fails must fail fast: before lock_timeout the tap waited for ever
RUN_TIMEOUT = 30


@pytest.fixture(scope="module")
def catalog(db):
    db.execute("CREATE TABLE locked (id int PRIMARY KEY, updated int, note text)")
    db.execute("INSERT INTO locked SELECT g, g, 'row ' || g FROM generate_series(1, 50) g")
    db.execute("ANALYZE locked")  # counted: discovery reads its row count without touching the table
    db.create_slot()
    return db.discover()


def chosen(catalog: dict, method: str) -> dict:
    """The catalog with the locked table selected for `method`."""
    selected = json.loads(json.dumps(catalog))
    return select_all(selected, method, "updated" if method == "INCREMENTAL" else None, only={"public-locked"})


@contextlib.contextmanager
def holding_lock(db, table: str = "locked", statement: str = "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE"):
    """Run `statement` (ACCESS EXCLUSIVE on the table) in a transaction of another session left open; yield its pid."""
    holder = db.server.connect(db.name, application_name=HOLDER)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            cur.execute(statement.format(table))
            yield pid
    finally:
        holder.rollback()
        holder.close()


def run(db, args: list[str], config: dict) -> tuple[list[dict], list[str], int]:
    """Run the tap to its end (failing after RUN_TIMEOUT s); return its messages, stderr lines and exit code."""
    command = [*TAP, "--config", str(db.write_json("config-locks.json", config)), *args]
    result = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT)
    # every line of stdout is a whole message: a half-written one fails here
    messages = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return messages, result.stderr.decode().splitlines(), result.returncode


def sync_args(db, catalog: dict) -> list[str]:
    return ["--catalog", str(db.write_json("catalog-locks.json", catalog))]


def assert_one_error_line(stderr: list[str], *parts: str) -> str:
    """The run ended with one error line holding every part, and no traceback."""
    assert not any("Traceback" in line for line in stderr), "\n".join(stderr)
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1, "\n".join(stderr)
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


@integration
@pytest.mark.parametrize("method", ["FULL_TABLE", "INCREMENTAL", "LOG_BASED"])
def test_lock_timeout_ends_the_run_with_one_line_naming_the_table_and_the_blocker(db, catalog, method):
    config = dict(db.config, lock_timeout=1)
    with holding_lock(db) as pid:
        started = time.monotonic()
        messages, stderr, code = run(db, sync_args(db, chosen(catalog, method)), config)
        took = time.monotonic() - started
    line = assert_one_error_line(stderr, "public-locked", "public.locked", f"pid {pid}", HOLDER, "lock_timeout")
    assert code == 1, line
    assert took < 10
    assert messages[-1]["type"] == "STATE"
    assert not [m for m in messages if m["type"] == "RECORD"]


@integration
def test_discovery_of_a_locked_table_never_counted_gives_up_at_lock_timeout(db, catalog):
    # never analyzed: its row count is estimated from its size, which needs a lock on it
    db.execute("CREATE TABLE fresh (id int PRIMARY KEY)")
    try:
        with holding_lock(db, "fresh") as pid:
            messages, stderr, code = run(db, ["--discover"], dict(db.config, lock_timeout=1))
    finally:
        db.execute("DROP TABLE fresh")
    assert code == 1
    assert messages == []
    assert_one_error_line(stderr, "discovery", "public.fresh", f"pid {pid}", "lock_timeout")


class BackgroundTap:
    """A tap run in the background whose stderr lines are read as they come."""

    def __init__(self, db, args: list[str], config: dict):
        command = [*TAP, "--config", str(db.write_json("config-locks-bg.json", config)), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.process.stderr:
            self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    def wait_for_line(self, *parts: str, timeout: float) -> str:
        """Return the first stderr line holding every part, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.stderr.append(line)
            if all(part in line for part in parts):
                return line
        raise AssertionError(f"no line with {parts} within {timeout} s:\n" + "\n".join(self.stderr))

    def stop(self, signum: int) -> tuple[float, int, list[dict]]:
        """Send `signum`; return how long the tap took to exit, its exit code and its messages."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT)
        finally:
            self.process.kill()
        took = time.monotonic() - started
        self._reader.join(timeout=5)
        self.stderr += [line for line in iter(self._lines.get_nowait, None)] if not self._lines.empty() else []
        messages = [json.loads(line) for line in self.process.stdout.read().decode().splitlines()]
        return took, code, messages


def wait_until_the_tap_waits_for_a_lock(db, timeout: float = 10) -> None:
    """Return once the server shows a session of the tap waiting for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = "SELECT 1 FROM pg_stat_activity WHERE application_name = 'tap-postgres' AND wait_event_type = 'Lock'"
        if db.query(waiting):
            return
        time.sleep(0.1)
    raise AssertionError(f"the tap did not wait for the lock within {timeout} s")


@integration
@pytest.mark.parametrize(
    ("method", "signum", "exit_code"),
    [
        ("FULL_TABLE", signal.SIGTERM, 143),
        ("FULL_TABLE", signal.SIGINT, 130),
        ("INCREMENTAL", signal.SIGTERM, 143),
        ("LOG_BASED", signal.SIGTERM, 143),
    ],
)
def test_a_signal_stops_a_tap_waiting_for_a_lock_at_once(db, catalog, method, signum, exit_code):
    config = dict(db.config, lock_timeout=0, progress_seconds=1)
    with holding_lock(db):
        tap = BackgroundTap(db, sync_args(db, chosen(catalog, method)), config)
        try:
            wait_until_the_tap_waits_for_a_lock(db)
            time.sleep(1.2)  # the lock watcher is at work too: the signal must stop it without a word
            # before: the signal acted only once the lock was released, here after the tap's timeout
            took, code, messages = tap.stop(signum)
        finally:
            tap.process.kill()
    assert took < 5
    assert code == exit_code, "\n".join(tap.stderr)
    assert_one_error_line(tap.stderr, "interrupted", signal.Signals(signum).name, "the last STATE was written")
    assert messages[-1]["type"] == "STATE"
    assert messages[-1]["value"]["currently_syncing"] == "public-locked"
    assert not [m for m in messages if m["type"] == "RECORD"]


@integration
def test_a_waiting_tap_names_the_table_and_the_blocker_every_interval_and_goes_on_after_it(db, catalog):
    config = dict(db.config, lock_timeout=0, progress_seconds=1)
    with holding_lock(db) as pid:
        tap = BackgroundTap(db, sync_args(db, chosen(catalog, "FULL_TABLE")), config)
        try:
            line = tap.wait_for_line("waiting", f"pid {pid}", timeout=10)
            tap.wait_for_line("waiting", f"pid {pid}", timeout=5)
        except BaseException:
            tap.process.kill()
            raise
    for part in ("public-locked", "public.locked", HOLDER, "idle in transaction after LOCK", "lock_timeout is 0"):
        assert part in line, line
    out = tap.process.stdout.read()
    assert tap.process.wait(timeout=RUN_TIMEOUT) == 0
    records = [m for m in map(json.loads, out.decode().splitlines()) if m["type"] == "RECORD"]
    assert len(records) == 50


@integration
def test_a_signal_stops_a_discovery_waiting_for_a_lock_at_once(db, catalog):
    db.execute("CREATE TABLE fresh (id int PRIMARY KEY)")  # never analyzed: its size is read, under a lock
    try:
        with holding_lock(db, "fresh"):
            tap = BackgroundTap(db, ["--discover"], dict(db.config, lock_timeout=0))
            try:
                wait_until_the_tap_waits_for_a_lock(db)
                took, code, messages = tap.stop(signal.SIGTERM)
            finally:
                tap.process.kill()
    finally:
        db.execute("DROP TABLE fresh")
    assert took < 5
    assert code == 143
    assert messages == []
    assert_one_error_line(tap.stderr, "interrupted by SIGTERM during discovery")


@integration
def test_creating_a_slot_behind_an_open_transaction_names_it_and_stops_on_sigterm(db, catalog):
    # a new slot waits for the transactions running when it is made: here one left open after an INSERT
    db.drop_slots()
    config = dict(db.config, lock_timeout=0, progress_seconds=1, create_replication_slot=True)
    try:
        with holding_lock(db, statement="INSERT INTO {} VALUES (1000, 1000, 'open')") as pid:
            tap = BackgroundTap(db, sync_args(db, chosen(catalog, "LOG_BASED")), config)
            try:
                line = tap.wait_for_line("waiting", "the end of transaction", f"pid {pid}", timeout=10)
                took, code, _ = tap.stop(signal.SIGTERM)
            finally:
                tap.process.kill()
        assert not db.query("SELECT 1 FROM pg_replication_slots WHERE database = %s", (db.name,))
    finally:
        db.drop_slots()
        db.create_slot()  # the module's slot, for the tests after
    assert "idle in transaction after INSERT" in line
    assert took < 5
    assert code == 143


@integration
def test_a_lock_timeout_through_a_pool_of_one_names_the_blocker_without_waiting_on_itself(db, catalog):
    # the tap's failed transaction holds the pool's one server connection until it is rolled back:
    # the session that looks for the blocker would wait for it for ever
    pool_of_one = {"pool_mode": "transaction", "default_pool_size": "1", "query_wait_timeout": "0"}
    with pgcluster.pgbouncer(db.server.port, **pool_of_one) as port, holding_lock(db) as pid:
        config = dict(db.config, port=port, lock_timeout=1)
        messages, stderr, code = run(db, sync_args(db, chosen(catalog, "FULL_TABLE")), config)
    assert code == 1
    assert_one_error_line(stderr, "public-locked", "public.locked", f"pid {pid}", HOLDER)
    assert messages[-1]["type"] == "STATE"


@integration
def test_the_wal_pass_rendering_a_change_from_a_locked_table_gives_up_at_lock_timeout(db, catalog):
    # an update that leaves a TOASTed value out is rendered with the row's current value, read from
    # the table: the render session waits for the lock
    db.execute("CREATE TABLE toasty (id int PRIMARY KEY, n int, body text)")
    db.execute("INSERT INTO toasty SELECT 1, 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g")
    db.execute("ANALYZE toasty")
    selected = select_all(db.discover(), "LOG_BASED", only={"public-toasty"})
    try:
        state = [m for m in db.sync(selected) if m["type"] == "STATE"][-1]["value"]
        db.execute("UPDATE toasty SET n = 2")
        args = [*sync_args(db, selected), "--state", str(db.write_json("state-locks.json", state))]
        with holding_lock(db, "toasty") as pid:
            messages, stderr, code = run(db, args, dict(db.config, lock_timeout=1))
    finally:
        db.execute("DROP TABLE toasty")
    assert code == 1
    assert any("Reading slot" in line for line in stderr)  # the wait was the WAL pass's
    assert_one_error_line(stderr, "LOG_BASED", "public.toasty", f"pid {pid}", HOLDER, "lock_timeout")
    assert messages[-1]["type"] == "STATE"
    assert not [m for m in messages if m["type"] == "RECORD"]


def test_a_blocker_is_named_by_what_the_tap_may_see_of_it():
    hidden = Blocker("a lock on public.t", 42, "bob", "psql", None, None, None)
    assert hidden.describe() == 'pid 42 (user "bob", application "psql")'
    active = Blocker("a lock on public.t", 43, "ops", None, "active", "VACUUM", 90)
    assert active.describe() == 'pid 43 (user "ops", running VACUUM for 90 s)'
    idle = Blocker("a lock on public.t", 44, "app", "web", "idle in transaction", "UPDATE", 7)
    assert (
        idle.describe()
        == 'pid 44 (user "app", application "web", idle in transaction after UPDATE, which began 7 s ago)'
    )
    assert Blocker(None, 45, None, None, None, None, None).describe() == "pid 45"


def test_many_blockers_are_named_by_the_first_three():
    blockers = [Blocker("a lock on public.t", pid, None, None, None, None, None) for pid in range(1, 6)]
    assert describe_blockers(blockers) == "pid 1, pid 2, pid 3 and 2 more"

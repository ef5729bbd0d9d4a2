"""LOG_BASED latency: a change reaches stdout soon after the tap reads it, under steady load and once the load stops.

A run that streams (break_at_end_lsn false) writes STATE only every STATE_EVERY_SECONDS or
STATE_EVERY_CHANGES; its records must not wait for that. `make bench` measures the latency at
several rates; these tests check the two ways records used to wait: a writer that never pauses for
a second (records held until the next STATE, seconds later), and a run that reads a large
transaction and then nothing (its last rendered batches held until the next STATE, 10 s later).
"""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time

import pytest
from conftest import select_all, states_of

from tap_postgres.sync.logical import STATE_EVERY_CHANGES


class StreamingTap:
    """A tap run that streams until stopped, its records' arrival times read as a target would read them."""

    def __init__(self, db, catalog: dict, state: dict):
        config = dict(db.config, break_at_end_lsn=False, logical_poll_total_seconds=60, max_run_seconds=60)
        self.process = db.start_sync(catalog, config, state)
        self.arrivals: list[tuple[float, dict]] = []  # (time.time() when read, record)
        self.reading = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        assert self.reading.wait(30), "the tap never started reading its slot:\n" + "".join(self.stderr)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if message["type"] == "RECORD":
                self.arrivals.append((time.time(), message["record"]))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.decode())
            if "Reading slot" in self.stderr[-1]:
                self.reading.set()

    def wait_for(self, rows: int, seconds: float) -> float | None:
        """Wait until `rows` records have arrived; return when the last did, or None after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if len(self.arrivals) >= rows:
                return self.arrivals[rows - 1][0]
            assert self.process.poll() is None, "the tap stopped:\n" + "".join(self.stderr)
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


@pytest.fixture(scope="module")
def ticks(db):
    # payload jsonb: a family the server renders, so batches go through the render sessions too
    db.execute("CREATE TABLE ticks (id bigint PRIMARY KEY, committed_us bigint, payload jsonb)")
    db.create_slot()
    catalog = select_all(db.discover(), method="LOG_BASED", only={"public-ticks"})
    return catalog, states_of(db.sync(catalog))[-1]


@pytest.fixture
def tap(db, ticks):
    catalog, state = ticks
    db.execute("TRUNCATE ticks")
    streaming = StreamingTap(db, catalog, state)
    yield streaming
    streaming.stop()


def test_records_reach_stdout_within_a_second_under_a_steady_load(db, tap):
    """A transaction of 5 rows every 100 ms for 4 s: no pause long enough for the run to call itself idle."""
    transactions, rows = 40, 5
    started = time.monotonic()
    for t in range(transactions):
        time.sleep(max(0.0, started + t * 0.1 - time.monotonic()))
        db.execute(
            "INSERT INTO ticks SELECT %s + g, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, '{\"k\": 1}' "
            "FROM generate_series(1, %s) g",
            (t * rows, rows),
        )
    assert tap.wait_for(transactions * rows, 20) is not None, f"{len(tap.arrivals)} of {transactions * rows} records"
    latencies = sorted(arrived - record["committed_us"] / 1e6 for arrived, record in tap.arrivals)
    # the tap writes what it read at least every FLUSH_SECONDS (0.2 s); the rest is this busy machine
    assert statistics.median(latencies) < 1.0, f"median latency {statistics.median(latencies):.2f} s"
    assert latencies[-1] < 2.5, f"worst latency {latencies[-1]:.2f} s"


def test_the_last_batches_of_a_large_transaction_are_written_while_the_run_waits(db, tap):
    """A transaction past STATE_EVERY_CHANGES ends with a STATE queued behind batches still rendering;
    with nothing more to read, the run must write them, not hold them until its next STATE."""
    rows = STATE_EVERY_CHANGES + 1
    db.execute(
        "INSERT INTO ticks SELECT g, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, jsonb_build_object('k', g) "
        "FROM generate_series(1, %s) g",
        (rows,),
    )
    committed = time.time()
    last = tap.wait_for(rows, 20)
    assert last is not None, f"{len(tap.arrivals)} of {rows} records"
    assert last - committed < 5, f"the last record came {last - committed:.1f} s after the commit"

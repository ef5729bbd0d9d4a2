"""tap | pipelinewise-target-postgres killed at random under a busy writer, rerun from the last saved state, loses nothing."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import psycopg2
import pytest
from conftest import select_all
from targets.compare import compare_table
from targets.pipeline import Pipeline, target_config

# make test: a few kills per method from a fixed seed; make soak: TAP_CHAOS_ROUNDS kills, a random seed
SOAK_ROUNDS = int(os.environ.get("TAP_CHAOS_ROUNDS") or 0)
KILLS = SOAK_ROUNDS or 4
SEED = int(os.environ.get("TAP_CHAOS_SEED") or (random.randrange(1_000_000) if SOAK_ROUNDS else 20261121))
ROWS = 30000
ITERSIZE = 500
BATCH_SIZE_ROWS = 1000
# A run that neither gets killed nor ends in this long has hung.
RUN_TIMEOUT = 120


class Writer(threading.Thread):
    """Inserts, updates (moving updated_at) and deletes rows of `table` one autocommit statement at a time."""

    def __init__(self, server, dbname: str, table: str, seed: str, next_id: int):
        super().__init__(daemon=True)
        self.server, self.dbname, self.table = server, dbname, table
        self.rng = random.Random(seed)
        self.next_id = next_id
        self.deleted: set[int] = set()
        self.counts = {"insert": 0, "update": 0, "delete": 0}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            conn = self.server.connect(self.dbname)
            try:
                while not self._stop_event.is_set():
                    self._one_change(conn)
                    time.sleep(0.003)
            finally:
                conn.close()
        except BaseException as error:  # reported by stop()
            self.error = error

    def _one_change(self, conn) -> None:
        table = psycopg2.sql.Identifier(self.table)
        choice = self.rng.random()
        with conn.cursor() as cur:
            if choice < 0.35:
                cur.execute(
                    psycopg2.sql.SQL("INSERT INTO {} (id, payload, amount, tags) VALUES (%s, %s, %s, %s)").format(
                        table
                    ),
                    (self.next_id, f"inserted {self.next_id}", self.rng.randrange(10**6) / 100, ["new", None]),
                )
                self.next_id += 1
                self.counts["insert"] += 1
            elif choice < 0.7:
                ident = self._existing_id()
                cur.execute(
                    psycopg2.sql.SQL(
                        "UPDATE {} SET payload = %s, amount = %s, tags = %s, updated_at = clock_timestamp() WHERE id = %s"
                    ).format(table),
                    (f"updated {ident} {self.rng.random()}", self.rng.randrange(10**6) / 100, ["upd"], ident),
                )
                self.counts["update"] += 1
            else:
                ident = self._existing_id()
                cur.execute(psycopg2.sql.SQL("DELETE FROM {} WHERE id = %s RETURNING id").format(table), (ident,))
                if cur.fetchall():
                    self.deleted.add(ident)
                    self.counts["delete"] += 1

    def _existing_id(self) -> int:
        # half of the changes hit the first rows, which a copy has passed when it is killed: their
        # deletes and updates must come from the WAL (or a resumed copy), not from the copy itself
        if self.rng.random() < 0.5:
            return self.rng.randrange(1, 2000)
        return self.rng.randrange(1, self.next_id)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}")


def _wait_for(condition, pipeline: Pipeline, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not pipeline.alive():
            return False
        time.sleep(0.02)
    return False


def _kill_schedule(rng: random.Random) -> list[tuple[str, str, float]]:
    """(phase, victim, when) per round.

    - "first batch": the tap dies after `when` RECORDs, before the STATE that ends its first batch
      (itersize rows): the target saves only what the tap said before its first row.
    - "copy": after `when` RECORDs of a first run or copy: the tap (cut there), the target or both die.
    - "any": `when` seconds after the start, whatever the pipeline is doing.
    make test runs two "first batch" kills, one "copy" and one "any"; make soak draws each round's phase.
    """
    phases = ["first batch", "first batch", "copy", "any"] if not SOAK_ROUNDS else []
    while len(phases) < KILLS:
        phases.append(rng.choice(["first batch", "copy", "copy", "any", "any"]))
    schedule = []
    for phase in phases:
        if phase == "first batch":
            schedule.append((phase, "tap", rng.randrange(1, ITERSIZE)))
        elif phase == "copy":
            schedule.append((phase, rng.choice(["tap", "target", "both"]), rng.randrange(ITERSIZE, ROWS // 2)))
        else:
            schedule.append((phase, rng.choice(["tap", "target", "both"]), round(rng.uniform(0.3, 4.0), 2)))
    return schedule


def _run_to_completion(workdir, tap_config, catalog, state, config, events, until_idle: bool) -> dict:
    """Rerun until a run ends by itself with exit 0 (a killed tap's slot may be busy for a moment).

    With `until_idle` (LOG_BASED), until a run also has no change left to send: a run stops at the WAL
    position current when it started, and with synchronous_commit off (the test cluster's setting) the
    writer's last commits may not be written there yet when the first final run starts.
    """
    for attempt in range(6):
        pipeline = Pipeline(workdir / f"final{attempt}", "pipelinewise", tap_config, catalog, state, config)
        codes = pipeline.wait(RUN_TIMEOUT)
        state = pipeline.last_state or state
        events.append(
            f"final run {attempt}: exit codes {codes}, {pipeline.records} RECORDs, {len(pipeline.states)} states "
            f"saved, tap's last words {pipeline.last_tap_log_line()!r}"
        )
        if codes == (0, 0) and not (until_idle and pipeline.records):
            return state
        if codes != (0, 0):
            events.append(pipeline.describe(tail=8))
            time.sleep(1)
    raise AssertionError("the final runs never completed:\n" + "\n".join(events))


@pytest.mark.parametrize("method", ["FULL_TABLE", "INCREMENTAL", "LOG_BASED"])
def test_killed_pipeline_rerun_from_the_saved_state_loses_nothing(db, target_conn, tmp_path, method):
    rng = random.Random(f"{SEED}-{method}")
    table = f"chaos_{method.lower()}"
    stream_id = f"public-{table}"
    db.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12, 2), tags text[], "
        "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    db.execute(
        f"INSERT INTO {table} (id, payload, amount, tags) "
        f"SELECT g, 'row ' || g, g / 100.0, ARRAY['t' || g % 7, NULL] FROM generate_series(1, {ROWS}) g"
    )
    catalog = select_all(
        db.discover(),
        method=method,
        replication_key="updated_at" if method == "INCREMENTAL" else None,
        only={stream_id},
    )
    tap_config = dict(db.config, itersize=ITERSIZE)
    if method == "LOG_BASED":
        tap_config.update(logical_poll_total_seconds=2, break_at_end_lsn=True)
        db.create_slot()
    config = target_config("pipelinewise", db.server, target_conn.info.dbname, table, batch_size_rows=BATCH_SIZE_ROWS)

    writer = Writer(db.server, db.name, table, f"{SEED}-{method}-writer", ROWS + 1)
    schedule = _kill_schedule(rng)
    events = [f"seed {SEED}, method {method}, schedule (phase, victim, RECORDs or seconds): {schedule}"]
    state = None
    writer.start()
    try:
        for index, (phase, victim, when) in enumerate(schedule):
            by_records = phase != "any"
            cut = when if by_records and victim == "tap" else None
            pipeline = Pipeline(tmp_path / f"round{index}", "pipelinewise", tap_config, catalog, state, config, cut)
            if cut is not None:
                # the relay kills the tap at the cut; the target goes on with what it got
                _wait_for(lambda p=pipeline: p.cut, pipeline, RUN_TIMEOUT)
                killed = pipeline.cut
            else:
                if by_records:
                    _wait_for(lambda p=pipeline, n=when: p.records >= n, pipeline, RUN_TIMEOUT)
                else:
                    time.sleep(when)
                killed = pipeline.alive()
                pipeline.kill(tap=victim in ("tap", "both"), target=victim in ("target", "both"))
            codes = pipeline.wait(RUN_TIMEOUT)
            state = pipeline.last_state or state
            events.append(
                f"round {index}: {'killed ' + victim if killed else 'ended by itself'} ({phase}, {when}) after "
                f"{pipeline.records} RECORDs, exit codes {codes}, tap's last words {pipeline.last_tap_log_line()!r}; "
                f"saved {len(pipeline.states)} states, the last: {json.dumps(state)}"
            )
    finally:
        writer.stop()
    events.append(f"writer: {writer.counts}")
    try:
        _run_to_completion(tmp_path, tap_config, catalog, state, config, events, until_idle=method == "LOG_BASED")
    finally:
        if method == "LOG_BASED":
            db.drop_slots()

    # INCREMENTAL never sees deletes, and pipelinewise ignores ACTIVATE_VERSION: deleted rows may stay
    leftovers = None if method == "LOG_BASED" else {(ident,) for ident in writer.deleted}
    diff = compare_table(db.conn, "public", table, target_conn, table, "pipelinewise", ["id"], deleted_keys=leftovers)
    print("\n".join(events))  # shown by pytest -s or -rP: what the kills hit
    assert not diff, (
        "\n".join(events) + f"\nreproduce: TAP_CHAOS_SEED={SEED} pytest tests/test_chaos.py\n" + diff.report()
    )

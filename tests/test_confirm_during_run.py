"""During a long LOG_BASED run the slot follows the state file the target rewrites, and a killed target loses nothing.

Set up as PipelineWise runs a pipeline: the tap is started with `--state state.json`, and every STATE
line pipelinewise-target-postgres prints (after it has committed the rows before it) is written into
that same file (tests/targets/state_file.py). With `state_poll_seconds: 1` the tap reads the file
again every second of its WAL pass and confirms the slot up to the lowest `lsn` in it.

Two LOG_BASED tables get inserts, updates, deletes and transactions spanning both, in bursts, from
a writer thread, while the test samples `confirmed_flush_lsn` of the slot every 0.1 s. Shown:

1. the slot's `confirmed_flush_lsn` moves forward at least twice during one run (not only at its
   start), and at every sample it is at most the lowest `lsn` of the state file read just after the
   sample (the file's positions only grow, so what the tap confirmed from an earlier version of the
   file is below it) and at most `pg_current_wal_lsn()`; it never goes backwards;
2. the target killed with SIGKILL at a random moment (seeded) of that run, the tap dying of the
   closed pipe (or killed too), a rerun from the state file as it was last rewritten, while the
   writer goes on, then one after the writer stopped, leave the target tables equal to the source
   ones: every row with its latest values, deleted rows gone (hard_delete).

TAP_CONFIRM_ROUNDS=n kills and reruns n times (default 1); TAP_CONFIRM_SEED picks the seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import threading
import time

import psycopg2
from conftest import select_all
from targets.compare import compare_table
from targets.pipeline import target_config
from targets.state_file import StateFilePipeline, lowest_lsn

ROUNDS = int(os.environ.get("TAP_CONFIRM_ROUNDS") or 1)
SEED = int(os.environ.get("TAP_CONFIRM_SEED") or 20261207)
TABLES = ("confirm_a", "confirm_b")
STREAMS = [f"public-{table}" for table in TABLES]
ROWS = 2000
# small target batches: the target commits, and prints a STATE, several times a second
BATCH_SIZE_ROWS = 50
# the long runs stop by themselves only if the kill never comes
LONG_RUN = {"break_at_end_lsn": False, "state_poll_seconds": 1, "logical_poll_total_seconds": 30}
LONG_RUN_SECONDS = 60
RUN_TIMEOUT = 90
# within this long of the WAL pass starting, the slot must have been confirmed twice
MOVES_WITHIN_SECONDS = 40


def lsn_text(lsn: int | None) -> str:
    return "none" if lsn is None else f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class BurstyWriter(threading.Thread):
    """Changes both tables one autocommit statement (or a two-table transaction) at a time, in bursts.

    Each burst lasts about a second; the pause after it, longer than the tap's quiet second, makes the
    tap write a STATE, so the target saves a newer position every few seconds.
    """

    def __init__(self, server, dbname: str, seed: str):
        super().__init__(daemon=True)
        self.server, self.dbname = server, dbname
        self.rng = random.Random(seed)
        self.next_id = dict.fromkeys(TABLES, ROWS + 1)
        self.counts = {"insert": 0, "update": 0, "delete": 0, "two tables": 0}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            conn = self.server.connect(self.dbname)
            try:
                while not self._stop_event.is_set():
                    burst_end = time.monotonic() + self.rng.uniform(0.6, 1.4)
                    while time.monotonic() < burst_end and not self._stop_event.is_set():
                        self._one_change(conn)
                        time.sleep(0.003)
                    self._stop_event.wait(self.rng.uniform(1.3, 2.0))
            finally:
                conn.close()
        except BaseException as error:  # reported by stop()
            self.error = error

    def _one_change(self, conn) -> None:
        choice = self.rng.random()
        table = self.rng.choice(TABLES)
        with conn.cursor() as cur:
            if choice < 0.1:
                with conn:  # one transaction updating a row of each table
                    for each in TABLES:
                        self._update(cur, each, self._existing_id(each))
                self.counts["two tables"] += 1
            elif choice < 0.45:
                ident = self.next_id[table]
                self.next_id[table] += 1
                cur.execute(
                    psycopg2.sql.SQL("INSERT INTO {} (id, payload, amount) VALUES (%s, %s, %s)").format(
                        psycopg2.sql.Identifier(table)
                    ),
                    (ident, f"inserted {ident}", self.rng.randrange(10**6) / 100),
                )
                self.counts["insert"] += 1
            elif choice < 0.8:
                self._update(cur, table, self._existing_id(table))
                self.counts["update"] += 1
            else:
                cur.execute(
                    psycopg2.sql.SQL("DELETE FROM {} WHERE id = %s").format(psycopg2.sql.Identifier(table)),
                    (self._existing_id(table),),
                )
                self.counts["delete"] += 1

    def _update(self, cur, table: str, ident: int) -> None:
        cur.execute(
            psycopg2.sql.SQL(
                "UPDATE {} SET payload = %s, amount = %s, updated_at = clock_timestamp() WHERE id = %s"
            ).format(psycopg2.sql.Identifier(table)),
            (f"updated {ident} {self.rng.random()}", self.rng.randrange(10**6) / 100, ident),
        )

    def _existing_id(self, table: str) -> int:
        return self.rng.randrange(1, self.next_id[table])

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(30)
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the slot, then at the state file the running pipeline's tap reads."""

    at: float
    run: str
    confirmed: int
    wal_end: int
    file_lowest: int | None
    file_text: str

    def problem(self, previous: Sample | None, created_at: int) -> str | None:
        """What is wrong with this sample, if anything."""
        allowed = created_at if self.file_lowest is None else max(created_at, self.file_lowest)
        if self.confirmed > allowed:
            return f"confirmed_flush_lsn {lsn_text(self.confirmed)} is past the state file's {lsn_text(allowed)}"
        if self.confirmed > self.wal_end:
            return f"confirmed_flush_lsn {lsn_text(self.confirmed)} is past pg_current_wal_lsn {lsn_text(self.wal_end)}"
        if previous is not None and self.confirmed < previous.confirmed:
            return f"confirmed_flush_lsn went back from {lsn_text(previous.confirmed)} to {lsn_text(self.confirmed)}"
        return None

    def describe(self) -> str:
        return (
            f"{self.at:7.2f}s [{self.run}] slot {lsn_text(self.confirmed)}, wal {lsn_text(self.wal_end)}, "
            f"file lowest {lsn_text(self.file_lowest)}, file {self.file_text}"
        )


class SlotWatch(threading.Thread):
    """Samples the slot every 0.1 s, and right after it the state file of the pipeline being run."""

    def __init__(self, server, dbname: str, slot: str):
        super().__init__(daemon=True)
        self.conn = server.connect(dbname)
        self.slot = slot
        self.created_at = self._read_slot()[0]
        self.samples: list[Sample] = []
        self.problems: list[str] = []
        self.pipeline: StateFilePipeline | None = None
        self.run_name = ""
        self.started = time.monotonic()
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # the test thread samples too
        self._stop_event = threading.Event()

    def watch(self, pipeline: StateFilePipeline, run_name: str) -> None:
        self.pipeline, self.run_name = pipeline, run_name

    def _read_slot(self) -> tuple[int, int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint, (pg_current_wal_lsn() - '0/0')::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )
            return cur.fetchone()

    def sample(self) -> Sample | None:
        pipeline, run_name = self.pipeline, self.run_name
        if pipeline is None:
            return None
        with self._lock:
            confirmed, wal_end = self._read_slot()
            text = pipeline.state_path.read_text()  # after the slot: the file's positions only grow
            lowest = lowest_lsn(json.loads(text), STREAMS)
            sample = Sample(time.monotonic() - self.started, run_name, confirmed, wal_end, lowest, text)
            problem = sample.problem(self.samples[-1] if self.samples else None, self.created_at)
            if problem is not None:
                self.problems.append(f"{problem}\n  at {sample.describe()}")
            self.samples.append(sample)
            return sample

    def run(self) -> None:
        try:
            while not self._stop_event.wait(0.1):
                self.sample()
        except BaseException as error:  # reported by stop()
            self.error = error

    def moves_since(self, baseline: Sample) -> list[Sample]:
        """The samples of baseline's run, after it, at which confirmed_flush_lsn was higher than at the one before."""
        samples = [sample for sample in self.samples if sample.run == baseline.run and sample.at >= baseline.at]
        return [later for earlier, later in itertools.pairwise(samples) if later.confirmed > earlier.confirmed]

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        self.conn.close()
        if self.error is not None:
            raise AssertionError(f"the slot watch failed: {self.error!r}")


def _wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _create_tables(db) -> None:
    for table in TABLES:
        db.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12, 2), "
            "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        db.execute(
            f"INSERT INTO {table} (id, payload, amount) "
            f"SELECT g, 'row ' || g, g / 100.0 FROM generate_series(1, {ROWS}) g"
        )


class Runs:
    """The pipelines of the test, one after the other, each watched by the SlotWatch, with a log of events."""

    def __init__(self, db, workdir, catalog: dict, target_config: dict, watch: SlotWatch):
        self.db, self.workdir, self.catalog, self.target_config, self.watch = db, workdir, catalog, target_config, watch
        self.events = [f"seed {SEED}, {ROUNDS} rounds, slot created at {lsn_text(watch.created_at)}"]
        self.current: StateFilePipeline | None = None

    def start(self, name: str, tap_config: dict, state: dict) -> StateFilePipeline:
        pipeline = StateFilePipeline(
            self.workdir / name, "pipelinewise", tap_config, self.catalog, state, self.target_config
        )
        self.current = pipeline
        self.watch.watch(pipeline, name)
        return pipeline

    def finish(self, pipeline: StateFilePipeline, how: str) -> dict:
        """Wait for the pipeline's end; return the state file as the target last rewrote it."""
        codes = pipeline.wait(RUN_TIMEOUT)
        self.events.append(
            f"{pipeline.workdir.name}: {how}: exit codes {codes}, {pipeline.records} RECORDs, {len(pipeline.states)} "
            f"states saved, {self.confirmations_logged(pipeline)} confirmations logged, tap's last words "
            f"{pipeline.last_tap_log_line()!r}"
        )
        return pipeline.saved_state()

    def run_to_end(self, name: str, tap_config: dict, state: dict) -> StateFilePipeline:
        pipeline = self.start(name, tap_config, state)
        self.finish(pipeline, "ran to its end")
        assert (pipeline.tap.returncode, pipeline.target_process.returncode) == (0, 0), pipeline.describe()
        return pipeline

    @staticmethod
    def confirmations_logged(pipeline: StateFilePipeline) -> int:
        return pipeline.tap_log.read_text(errors="replace").count("what the target has saved")

    def wait_for_wal_pass(self, pipeline: StateFilePipeline) -> Sample:
        """Wait for the tap to start reading the slot; return the slot's position then (its start confirmed the file)."""
        started = _wait_until(
            lambda: "Reading slot" in pipeline.tap_log.read_text(errors="replace") or not pipeline.alive(), 60
        )
        assert started and pipeline.alive(), f"the WAL pass never started\n{pipeline.describe()}"
        return self.watch.sample()

    def wait_for_moves(self, pipeline: StateFilePipeline, baseline: Sample, count: int) -> list[Sample]:
        _wait_until(
            lambda: len(self.watch.moves_since(baseline)) >= count or not pipeline.alive(), MOVES_WITHIN_SECONDS, 0.1
        )
        moves = self.watch.moves_since(baseline)
        self.events.append(
            f"{baseline.run}: WAL pass from {lsn_text(baseline.confirmed)} at {baseline.at:.1f}s, slot moved "
            + ", ".join(f"to {lsn_text(move.confirmed)} at {move.at:.1f}s" for move in moves)
        )
        return moves

    def kill_target(self, pipeline: StateFilePipeline) -> dict:
        """SIGKILL the target; the tap dies at its next write to the closed pipe, or is killed after 5 s."""
        assert pipeline.alive(), f"{pipeline.workdir.name} ended before its kill\n{pipeline.describe()}"
        pipeline.kill(target=True)
        tap_died = _wait_until(lambda: pipeline.tap.poll() is not None, 5)
        if not tap_died:
            pipeline.kill(tap=True)
        state = self.finish(pipeline, f"target killed, tap {'died' if tap_died else 'killed too'}")
        self.events.append(f"  state file as last rewritten: {json.dumps(state)}")
        self.wait_for_slot_released()
        return state

    def wait_for_slot_released(self) -> None:
        """A killed tap's walsender lets go of the slot a moment later; a rerun before that fails."""
        released = _wait_until(
            lambda: self.db.query(
                "SELECT bool_and(active_pid IS NULL) FROM pg_replication_slots WHERE database = %s", (self.db.name,)
            )[0][0],
            timeout=15,
            step=0.1,
        )
        assert released, f"the slot is still in use 15 s after its pipeline ended\n{self.report()}"

    def stop_current(self) -> None:
        """After a failure: end the pipeline still running, so the slot can be dropped."""
        if self.current is not None and self.current.alive():
            self.current.kill(tap=True, target=True)
            self.current.wait(RUN_TIMEOUT)
            self.wait_for_slot_released()

    def report(self) -> str:
        tail = "\n".join(sample.describe() for sample in self.watch.samples[-15:])
        return "\n".join(self.events) + f"\nlast samples:\n{tail}\nreproduce: TAP_CONFIRM_SEED={SEED} pytest {__file__}"


def test_slot_follows_the_rewritten_state_file_and_a_killed_target_loses_nothing(db, target_conn, tmp_path):
    rng = random.Random(SEED)
    _create_tables(db)
    catalog = select_all(db.discover(), method="LOG_BASED", only=set(STREAMS))
    slot = db.create_slot()
    config = target_config(
        "pipelinewise", db.server, target_conn.info.dbname, "confirm_target", batch_size_rows=BATCH_SIZE_ROWS
    )
    quick_run = dict(db.config, break_at_end_lsn=True, logical_poll_total_seconds=2, state_poll_seconds=1)
    long_run = dict(db.config, **LONG_RUN, max_run_seconds=LONG_RUN_SECONDS)
    watch = SlotWatch(db.server, db.name, slot)
    writer = BurstyWriter(db.server, db.name, f"{SEED}-writer")
    runs = Runs(db, tmp_path, catalog, config, watch)

    watch.start()
    try:
        # a first run copies both tables and leaves an lsn per stream in the file
        state = runs.run_to_end("first", quick_run, {}).saved_state()
        assert lowest_lsn(state, STREAMS) is not None, f"no lsn saved by the first run: {state}"

        writer.start()
        for round_index in range(ROUNDS):
            pipeline = runs.start(f"long{round_index}", long_run, state)
            baseline = runs.wait_for_wal_pass(pipeline)
            # (1) the slot moves at least twice during the run, each time because the tap read the file
            moves = runs.wait_for_moves(pipeline, baseline, 2)
            assert len(moves) >= 2, f"the slot moved {len(moves)} times in {MOVES_WITHIN_SECONDS} s\n{runs.report()}"
            assert _wait_until(lambda p=pipeline: runs.confirmations_logged(p) >= 2, 3), pipeline.describe()
            # (2) kill the target at a random moment, then go on from the file as it was last rewritten
            time.sleep(rng.uniform(0.0, 3.0))  # a writer's burst and pause last about 2.6 s
            state = runs.kill_target(pipeline)

        # a rerun while the writer goes on, then runs until one has nothing left to send (a run stops
        # at the WAL end current when it started)
        state = runs.run_to_end("rerun", dict(long_run, max_run_seconds=4), state).saved_state()
        writer.stop()
        runs.events.append(f"writer: {writer.counts}")
        for attempt in range(4):
            final = runs.run_to_end(f"final{attempt}", quick_run, state)
            state = final.saved_state()
            if not final.records:
                break
        else:
            raise AssertionError(f"the final runs never caught up\n{runs.report()}")
        watch.sample()
    finally:
        writer.stop()
        runs.stop_current()
        watch.stop()
    print(runs.report())  # shown by pytest -s or -rP

    failures = [f"slot: {problem}" for problem in watch.problems[:10]]
    for table in TABLES:
        diff = compare_table(db.conn, "public", table, target_conn, "confirm_target", "pipelinewise", ["id"])
        failures += [f"{table}: {diff.report()}"] if diff else []
    for run_dir in sorted(tmp_path.iterdir()):
        log = (run_dir / "tap.stderr").read_text(errors="replace")
        failures += [f"{run_dir.name}: the tap printed a traceback\n{log[-3000:]}"] if "Traceback" in log else []
    assert not failures, "\n".join(failures) + "\n" + runs.report()

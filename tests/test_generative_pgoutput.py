"""The generative LOG_BASED check of test_generative.py again, read through pgoutput instead of wal2json.

With test_generative's wal2json leg this makes the parity three-way: on random tables drawn alike,
each LOG_BASED record holds FULL_TABLE's bytes through wal2json there and through pgoutput here. A
table pgoutput cannot publish (no primary key and not REPLICA IDENTITY FULL) is first checked to be
refused before any copy (exit 1, one line, no record, not published), then read as REPLICA IDENTITY
FULL. Bounded and derandomized in make test; TAP_FUZZ_EXAMPLES and TAP_FUZZ_SEED
make it long and seeded under make fuzz, as test_generative.py's tests.
"""

from __future__ import annotations

import dataclasses

import pytest
import test_generative
from generative.runner import Run
from generative.strategies import Table, hostile_tables
from hypothesis import currently_in_test_context, given, note
from hypothesis import strategies as st
from test_generative import bounded_shrinking, check_log_based, generative, tables  # noqa: F401 (an autouse fixture)

env = test_generative.env  # the module-scoped fixture: this module's database, hstore, citext and its slot

# The log-based runs' settings, as test_generative's: a run stops at the WAL end it started at.
LOG_BASED_CONFIG = {"logical_poll_total_seconds": 2, "break_at_end_lsn": True}


@pytest.fixture(scope="module", autouse=True)
def pgoutput(db):
    """A pgoutput slot, made after an empty publication named like it; the tap keeps that publication."""
    db.plugin = "pgoutput"


def has_replica_identity(table: Table) -> bool:
    """pgoutput publishes a table with a primary key or REPLICA IDENTITY FULL (on every leaf, as the builder sets it)."""
    return bool(table.primary_key) or table.replica_identity == "FULL"


def say(text: str) -> None:
    """Hypothesis prints a note when the example fails (pytest prints it for a fixed example)."""
    (note if currently_in_test_context() else print)(text)


def note_pgoutput() -> None:
    say(
        '-- pgoutput: the module\'s slot is made as CREATE PUBLICATION "pipelinewise_<dbname>"; then '
        "SELECT pg_create_logical_replication_slot('pipelinewise_<dbname>', 'pgoutput') (not wal2json as the "
        'script below says), and every config.json adds {"create_replication_slot": true, "output_plugin": '
        '"pgoutput"}'
    )


def refusal_problems(env, example, run: Run) -> list[str]:
    """The run is refused with one line naming the missing replica identity; nothing emitted, nothing published."""
    problems = []
    if run.crash:
        problems.append(f"a traceback instead of one line:\n{run.failure()}")
    if run.code != 1:
        problems.append(f"exit code {run.code}, expected 1; stderr:\n{run.stderr[-3000:]}")
    start = run.stderr.find("tap-postgres: error:")
    error = run.stderr[start:] if start >= 0 else ""
    if start < 0 or error.count("\n") != 1 or not error.endswith("\n"):
        problems.append(f"not one error line at the end of stderr:\n{run.stderr[-3000:]}")
    elif "has no replica identity" not in error:
        problems.append(f"another error than the missing replica identity: {error.strip()}")
    if "Traceback" in run.stderr:
        problems.append(f"a traceback in stderr:\n{run.stderr[-3000:]}")
    records = [line for line in run.lines if line.startswith('{"type":"RECORD"')]
    if records:
        problems.append(f"{len(records)} records before the refusal: {records[:3]}")
    published = env.db.query(
        "SELECT count(*) FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        (example.schema,),
    )[0][0]
    if published:
        problems.append(f"{published} of the refused table's relations were added to the publication")
    return problems


def check_refused(env, table: Table) -> None:
    """A table without replica identity: LOG_BASED through pgoutput stops before any copy with one line."""
    example = env.example(table)
    run = None
    try:
        example.build()
        env.advance_slot()
        catalog = env.catalog(example, "LOG_BASED")
        run = env.sync(example, catalog, **LOG_BASED_CONFIG)
        problems = refusal_problems(env, example, run)
        assert not problems, "pgoutput does not refuse a table without replica identity as one line:\n" + "\n".join(
            problems
        )
    except BaseException:
        say("-- reproduce in a fresh database (psql), the table without replica identity:\n" + example.script.text())
        raise
    finally:
        env.finish(example, [run] if run else [])


def check_pgoutput(env, table: Table, data) -> None:
    """Refused without replica identity; then (with REPLICA IDENTITY FULL if need be) test_generative's parity."""
    note_pgoutput()
    if not has_replica_identity(table):
        check_refused(env, table)
        say(
            "-- the drawn table (no primary key, REPLICA IDENTITY DEFAULT) was refused as it should be; "
            "the LOG_BASED runs below are of the same table made REPLICA IDENTITY FULL"
        )
        table = dataclasses.replace(table, replica_identity="FULL")
    check_log_based(env, table, data)


@generative("log_based")
@given(data=st.data())
def test_pgoutput_emits_the_bytes_of_full_table_and_wal2json_or_refuses_a_table_without_identity(env, data):
    """A keyless DEFAULT table is refused (then made REPLICA IDENTITY FULL); each change is FULL_TABLE's bytes.

    The table is drawn of the types the server under test has (no multiranges on 13, for one).
    """
    table = data.draw(tables(version=env.db.server.version_num), label="table")
    check_pgoutput(env, table, data)


class FixedDraws:
    """Stands in for st.data() in a fixed example: each label's draw is given."""

    def __init__(self, values: dict):
        self.values = values

    def draw(self, strategy, label: str):
        return self.values[label]


@pytest.mark.parametrize("number", range(len(hostile_tables())))
def test_pgoutput_reads_the_hostile_names_and_values(env, number):
    """The fixed hostile tables (names with quotes, %, braces, tabs, line breaks; a partitioned one) via pgoutput."""
    table, draws = hostile_tables()[number]
    check_pgoutput(env, table, FixedDraws(draws))

"""Random tables (odd names, every supported type, keys, partitions) through every sync method, checked against the database."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from decimal import Decimal

import jsonschema
import pytest
from generative.builder import Change, Example, Row
from generative.fuzzing import fuzz_settings, shrinking_capped
from generative.matchers import canonical
from generative.runner import (
    Problem,
    Run,
    check_schema,
    defect,
    gravest_first,
    record_members,
    run_tap,
    validate_record,
    validators_of,
)
from generative.script import ident, string
from generative.strategies import dml_plans, free_text, hostile_tables, identifiers, tables
from hypothesis import currently_in_test_context, given, note
from hypothesis import strategies as st
from psycopg2 import sql

# Random tables per test in the bounded run (make test); make fuzz shares TAP_FUZZ_EXAMPLES among them.
BOUNDED_EXAMPLES = {"validate": 25, "full_table": 60, "incremental": 30, "log_based": 40, "metadata": 6}
QUOTING_EXAMPLES = 300  # one query each
# Failing examples are shrunk for at most this long per test in the bounded run
BOUNDED_SHRINK_SECONDS = 20


def generative(name: str):
    """Hypothesis settings of one test: bounded and derandomized by default, long and seeded under make fuzz."""
    return fuzz_settings(BOUNDED_EXAMPLES, name, None if name in BOUNDED_EXAMPLES else QUOTING_EXAMPLES)


@pytest.fixture(autouse=True)
def bounded_shrinking():
    """Cap the time spent shrinking in the bounded run."""
    with shrinking_capped(BOUNDED_SHRINK_SECONDS):
        yield


LOG_BASED_CONFIG = {"logical_poll_total_seconds": 2, "break_at_end_lsn": True}
ITERSIZES = st.sampled_from([1, 2, 3, 20000])


@pytest.fixture(scope="module")
def env(db):
    """The module's database with hstore, citext and the wal2json slot; examples number their schemas."""
    db.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    slot = db.create_slot()
    return Env(db, slot)


class Env:
    def __init__(self, db, slot: str):
        self.db = db
        self.slot = slot

    def example(self, table) -> Example:
        example = Example(self.db.conn, table)
        example.drop()
        return example

    def config(self, example: Example, **extra) -> dict:
        """The tap's config: filter_schemas names the example's schema unless its comma list cannot.

        The tap splits the list at commas and strips each name, so a schema named with a comma or with
        surrounding whitespace is discovered among every schema: the module's database has no other table.
        """
        schema = example.schema
        only = {"filter_schemas": schema} if "," not in schema and schema == schema.strip() else {}
        return {**self.db.config, **only, **extra}

    def catalog(self, example: Example, method: str, **metadata) -> dict:
        """--discover, then select the example's stream with `method`."""
        discovered = run_tap(self.db.tmp_dir, self.config(example), discover=True)
        fail(example, crashed("--discover", discovered))
        catalog = json.loads("\n".join(discovered.lines))
        (stream,) = [s for s in catalog["streams"] if s["tap_stream_id"] == example.stream]
        table_metadata = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
        table_metadata.update({"selected": True, "replication-method": method, **metadata})
        return {"streams": [stream]}

    def sync(self, example: Example, catalog: dict, state: str | None = None, **config) -> Run:
        """Run the tap on the example's stream; the run is noted in the example's script."""
        table_metadata = next(item["metadata"] for item in catalog["streams"][0]["metadata"] if not item["breadcrumb"])
        method = table_metadata["replication-method"]
        extra = {"replication-key": table_metadata["replication-key"]} if "replication-key" in table_metadata else {}
        config = self.config(example, **config)
        settings = {key: value for key, value in config.items() if key not in self.db.config}
        example.script.tap_run(method, settings, example.stream, extra, state is not None)
        return run_tap(self.db.tmp_dir, config, catalog, state)

    def finish(self, example: Example, runs: list[Run]) -> None:
        """Drop the example's schema; a crashed run may have left sessions behind, which would block it."""
        if any(run.failed for run in runs):
            self.db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND application_name = 'tap-postgres'"
            )
        example.drop()

    def advance_slot(self) -> None:
        """Move the slot to the current WAL end, so a LOG_BASED run reads only its own example's changes.

        A run that crashed or timed out may have left its walsender holding the slot: end it first.
        """
        self.db.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (self.slot,),
        )
        for _ in range(50):
            if not self.db.query("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))[0][0]:
                break
            time.sleep(0.1)
        self.db.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (self.slot,))


# ----------------------------------------------------------------------------------- failures

# A crash hides what follows it, and a validator that crashes says more than one that reports.
_SEVERITY = ("tap failed", "validator crashed", "record invalid", "schema invalid")


def fail(example: Example, problems: list[Problem]) -> None:
    """Raise the gravest problem as an exception class of its own kind, so hypothesis shrinks each kind apart.

    The other kinds the example showed are listed after it: one example often shows several bugs.
    """
    if not problems:
        return
    first, *others = gravest_first(problems, _SEVERITY, unranked=0)
    also = "".join(f"\n  also {p.kind}: {p.detail[:500]}" for p in others[:7])
    raise defect(first.kind)(f"{first.kind}\n{first.detail}{also}")


def note_script(example: Example) -> None:
    """Note the example's psql script: hypothesis prints it when the example fails (pytest, for a fixed one)."""
    table = example.table
    (note if currently_in_test_context() else print)(
        f"-- reproduce in a fresh database (psql): {len(table.columns)} columns, key {table.primary_key}, "
        f"partitioned {table.partitioning is not None}, replica identity {table.replica_identity}\n"
        + "CREATE EXTENSION IF NOT EXISTS hstore;\nCREATE EXTENSION IF NOT EXISTS citext;\n"
        + "SELECT pg_create_logical_replication_slot('pipelinewise_<dbname>', 'wal2json');  -- LOG_BASED runs only\n"
        + example.script.text()
    )


def crashed(method: str, run: Run) -> list[Problem]:
    if not run.failed:
        return []
    return [Problem(f"tap failed in {method}: {run.failure_kind()}", run.failure())]


def families(example: Example) -> dict[str, str]:
    """Each column's type, as the problems name it."""
    return {c.name: c.type.description + (" NOT NULL" if c.not_null else "") for c in example.columns}


def schema_problems(example: Example, run: Run, method: str) -> list[Problem]:
    """Every SCHEMA is a valid schema and every RECORD valid against the latest SCHEMA, under both drafts."""
    problems, validators, types = [], {}, families(example)
    for line in run.lines:
        if line.startswith('{"type":"SCHEMA"'):
            found = check_schema(json.loads(line)["schema"]) + check_schema(
                json.loads(line, parse_float=Decimal)["schema"]
            )
            problems += [Problem(f"{p.kind}", f"{method} SCHEMA: {p.detail}\n{line[:2000]}") for p in found]
            broken = {p.kind.split("under ")[1].split(":")[0] for p in found}
            validators = {key: v for key, v in validators_of(line).items() if key[0] not in broken}
        elif line.startswith('{"type":"RECORD"'):
            for parse_float in (float, Decimal):
                record = json.loads(line, parse_float=parse_float)["record"]
                wanted = {key: v for key, v in validators.items() if (key[1] == "Decimal") == (parse_float is Decimal)}
                # a delete's record is a finding of its own: it carries nulls no other record has
                deleted = " in a delete" if record.get("_sdc_deleted_at") is not None else ""
                for problem in validate_record(wanted, record, types):
                    problems.append(
                        Problem(problem.kind + deleted, f"{method}: {problem.detail}\nrecord line: {line[:2000]}")
                    )
    # one entry per kind: the same violation under both drafts and parsings is one finding
    return list({p.kind: p for p in problems}.values())


def values_of(line: str) -> dict:
    return json.loads(line, parse_float=Decimal)["record"]


def raw_values(line: str) -> tuple[str, ...]:
    """The JSON text of each column's value, in order, without the _sdc_ columns."""
    return tuple(raw for name, raw in record_members(line) if not name.startswith("_sdc_"))


def compare_rows(label: str, example: Example, expected: list[list], lines: list[str]) -> list[Problem]:
    """The records of `lines` hold exactly the `expected` rows (lists of JSON values in column order)."""
    columns = example.columns
    names = [c.name for c in columns]
    problems = []
    actual = []
    for line in lines:
        record = values_of(line)
        keys = [name for name in record if not name.startswith("_sdc_")]
        if keys != names:
            problems.append(Problem(f"{label} record has other columns", f"columns {keys!r}, expected {names!r}"))
            return problems
        actual.append([record[name] for name in names])
    want = Counter(tuple(canonical(v) for v in row) for row in expected)
    got = Counter(tuple(canonical(v) for v in row) for row in actual)
    if want == got:
        return []
    missing = [row for row in expected if want[key := tuple(canonical(v) for v in row)] > got[key]]
    extra = [row for row in actual if got[key := tuple(canonical(v) for v in row)] > want[key]]
    if len(expected) != len(actual):
        return [
            Problem(
                f"{label} emits {'fewer' if len(actual) < len(expected) else 'more'} rows than the table holds",
                f"{len(actual)} records for {len(expected)} rows; rows not emitted: {missing!r}; "
                f"records not in the table: {extra!r}",
            )
        ]
    for want_row, got_row in zip(missing, extra, strict=False):
        for column, wanted, emitted in zip(columns, want_row, got_row, strict=True):
            if canonical(wanted) != canonical(emitted):
                problems.append(
                    Problem(
                        f"{label} value differs: {column.type.base.family}{'[]' if column.type.array else ''}",
                        f"column {column.name!r} ({column.type.description}): emitted {emitted!r}, "
                        f"the database holds {wanted!r}",
                    )
                )
    return problems or [Problem(f"{label} rows differ", f"not emitted: {missing!r}; not in the table: {extra!r}")]


# ----------------------------------------------------------------------------------- the runs


def valid_keys(catalog: dict) -> list[str]:
    return next(item["metadata"] for item in catalog["streams"][0]["metadata"] if not item["breadcrumb"])[
        "valid-replication-keys"
    ]


def log_based_runs(env: Env, example: Example, data) -> tuple[Run, list[Row], list[Change], Run | None]:
    """LOG_BASED: the initial copy, then the plan's changes, then a run from the copy's STATE."""
    env.advance_slot()
    catalog = env.catalog(example, "LOG_BASED")
    first = env.sync(example, catalog, **LOG_BASED_CONFIG, itersize=data.draw(ITERSIZES, label="itersize"))
    before = example.snapshot()
    if first.failed:
        return first, before, [], None
    changes = example.apply(data.draw(dml_plans(example.table), label="changes"), before)
    second = env.sync(example, catalog, first.last_state(), **LOG_BASED_CONFIG)
    return first, before, changes, second


@contextlib.contextmanager
def built(env: Env, table):
    """Build the example's table, note its script (printed when the example fails), drop it afterwards."""
    example = env.example(table)
    runs: list[Run] = []
    try:
        example.build()
        yield example, runs
    finally:
        note_script(example)
        env.finish(example, runs)


# ----------------------------------------------------------------------------------- the checks


def check_validate(env: Env, table, data) -> None:
    """Every SCHEMA is valid and every RECORD valid against it, under draft 4 and 2020-12, for every method."""
    with built(env, table) as (example, runs):
        problems = []
        catalog = env.catalog(example, "FULL_TABLE")
        full = env.sync(example, catalog, itersize=data.draw(ITERSIZES, label="itersize"))
        runs.append(full)
        problems += crashed("FULL_TABLE", full) or schema_problems(example, full, "FULL_TABLE")
        keys = valid_keys(catalog)
        if keys:
            key = data.draw(st.sampled_from(keys), label="replication key")
            incremental = env.sync(example, env.catalog(example, "INCREMENTAL", **{"replication-key": key}))
            runs.append(incremental)
            problems += crashed("INCREMENTAL", incremental) or schema_problems(example, incremental, "INCREMENTAL")
        first, _, _, second = log_based_runs(env, example, data)
        runs += [first, second] if second else [first]
        problems += crashed("LOG_BASED copy", first) or schema_problems(example, first, "LOG_BASED copy")
        if second:
            problems += crashed("LOG_BASED", second) or schema_problems(example, second, "LOG_BASED")
        fail(example, problems)


def check_full_table(env: Env, table, data) -> None:
    """FULL_TABLE emits each value as the database holds it."""
    with built(env, table) as (example, runs):
        rows = example.snapshot()
        full = env.sync(example, env.catalog(example, "FULL_TABLE"), itersize=data.draw(ITERSIZES, label="itersize"))
        runs.append(full)
        expected = [row.expected(example.columns) for row in rows]
        fail(
            example,
            crashed("FULL_TABLE", full)
            or compare_rows("FULL_TABLE", example, expected, full.record_lines(example.stream)),
        )


def check_incremental(env: Env, table, data) -> None:
    """INCREMENTAL emits FULL_TABLE's bytes of every row, and a rerun from its STATE the rows at the bookmark."""
    with built(env, table) as (example, runs):
        catalog = env.catalog(example, "FULL_TABLE")
        keys = valid_keys(catalog)
        if not keys:
            return
        key = data.draw(st.sampled_from(keys), label="replication key")
        full = env.sync(example, catalog, itersize=data.draw(ITERSIZES, label="itersize"))
        runs.append(full)
        fail(example, crashed("FULL_TABLE", full))
        incremental_catalog = env.catalog(example, "INCREMENTAL", **{"replication-key": key})
        first = env.sync(example, incremental_catalog, itersize=data.draw(ITERSIZES, label="itersize"))
        runs.append(first)
        fail(example, crashed("INCREMENTAL", first))
        key_type = next(c.type.description for c in example.columns if c.name == key)
        want = Counter(raw_values(line) for line in full.record_lines(example.stream))
        got = Counter(raw_values(line) for line in first.record_lines(example.stream))
        if want != got:
            lost, added = want - got, got - want
            kind = "misses rows" if sum(lost.values()) > sum(added.values()) else "emits rows"
            if sum(lost.values()) == sum(added.values()):
                kind = "emits other bytes for rows"
            fail(
                example,
                [
                    Problem(
                        f"INCREMENTAL {kind} of FULL_TABLE",
                        f"replication key {key!r} ({key_type}): FULL_TABLE rows INCREMENTAL did not emit: "
                        f"{list(lost.elements())}; INCREMENTAL rows FULL_TABLE did not emit: {list(added.elements())}",
                    )
                ],
            )
        # a rerun from the last STATE emits again at least the rows holding the greatest key (>= bookmark)
        greatest = example.rows_with_greatest(key)
        again = env.sync(example, incremental_catalog, first.last_state())
        runs.append(again)
        fail(example, crashed("INCREMENTAL rerun", again))
        position = [c.name for c in example.columns].index(key)
        wanted = [canonical(row.expected(example.columns)[position]) for row in greatest]
        emitted = [canonical(values_of(line).get(key)) for line in again.record_lines(example.stream)]
        if wanted and emitted.count(wanted[0]) < len(wanted):
            fail(
                example,
                [
                    Problem(
                        "INCREMENTAL rerun does not emit the rows at its bookmark",
                        f"replication key {key!r} ({key_type}), state {first.last_state()}: {len(wanted)} rows hold "
                        f"the greatest key {wanted[0]!r}, the rerun emitted {emitted!r}",
                    )
                ],
            )


def check_log_based(env: Env, table, data) -> None:
    """LOG_BASED emits each change as one record: FULL_TABLE's bytes of the row, or a delete."""
    with built(env, table) as (example, runs):
        first, before, changes, second = log_based_runs(env, example, data)
        runs += [first, second] if second else [first]
        fail(example, crashed("LOG_BASED copy", first) or crashed("LOG_BASED", second))
        after = env.sync(example, env.catalog(example, "FULL_TABLE"))
        runs.append(after)
        fail(example, crashed("FULL_TABLE", after))
        fail(example, log_based_problems(example, changes, first, second, after))


def check_metadata(env: Env, table) -> None:
    """The catalog streams of the example's schema: every record valid against its stream's SCHEMA, both drafts."""
    with built(env, table) as (example, runs):
        config = env.config(example, metadata_only=True)
        discovered = run_tap(env.db.tmp_dir, config, discover=True)
        fail(example, crashed("--discover metadata_only", discovered))
        catalog = json.loads("\n".join(discovered.lines))
        for stream in catalog["streams"]:
            stream["metadata"][0]["metadata"]["selected"] = True
        run = run_tap(env.db.tmp_dir, config, catalog)
        runs.append(run)
        fail(example, crashed("catalog streams", run))
        validators, problems = {}, []
        for message in run.messages(parse_float=float):
            if message["type"] == "SCHEMA":
                validators[message["stream"]] = [
                    jsonschema.Draft4Validator(message["schema"]),
                    jsonschema.Draft202012Validator(message["schema"]),
                ]
            elif message["type"] == "RECORD":
                for validator in validators[message["stream"]]:
                    for error in validator.iter_errors(message["record"]):
                        kind = f"catalog stream record invalid: {message['stream']} {list(error.path)}"
                        problems.append(Problem(kind, f"{error.message}\n{message['record']}"))
        columns = [m for m in run.messages(parse_float=float) if m.get("stream") == "pg_metadata-columns"]
        if not any(m["type"] == "RECORD" for m in columns):
            problems.append(Problem("catalog streams describe no column of the example's table", example.stream))
        fail(example, list({p.kind: p for p in problems}.values()))


# ----------------------------------------------------------------------------------- the tests


@generative("validate")
@given(table=tables(), data=st.data())
def test_every_record_validates_against_its_schema_under_draft4_and_2020_12(env, table, data):
    check_validate(env, table, data)


@generative("full_table")
@given(table=tables(), data=st.data())
def test_full_table_emits_each_value_as_the_database_holds_it(env, table, data):
    check_full_table(env, table, data)


@generative("incremental")
@given(table=tables(), data=st.data())
def test_incremental_emits_the_full_table_bytes_of_every_row_and_resumes_at_its_bookmark(env, table, data):
    check_incremental(env, table, data)


@generative("log_based")
@given(table=tables(), data=st.data())
def test_log_based_changes_emit_the_full_table_bytes_of_each_row_state(env, table, data):
    check_log_based(env, table, data)


class FixedDraws:
    """Stands in for st.data() in a fixed example: each label's draw is given."""

    def __init__(self, values: dict):
        self.values = values

    def draw(self, strategy, label: str):
        value = self.values[label]
        choices = getattr(getattr(strategy, "wrapped_strategy", strategy), "elements", None)
        assert choices is None or value in choices, f"{label} {value!r} is not one of {list(choices)!r}"
        return value


CHECKS = {"validate": check_validate, "full_table": check_full_table, "incremental": check_incremental,
          "log_based": check_log_based}  # fmt: skip


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("number", range(len(hostile_tables())))
def test_hostile_names_and_values(env, check, number):
    """The issue's hostile names (schema, table, columns, enum, domains) and key values, in every bounded run.

    The random tables hold them too (generative.strategies.hostile_texts), these two in every run:
    a table keyed by an enum named x{text}y with a domain e{v}, and a partitioned one keyed by text
    in a schema filter_schemas cannot name.
    """
    table, draws = hostile_tables()[number]
    CHECKS[check](env, table, FixedDraws(draws))


@generative("quoting")
@given(name=identifiers(), text=free_text())
def test_the_builders_quoting_reads_back_every_name_and_value(env, name, text):
    """ident() and string(), which every statement of the builder quotes with, read back as the name and the text."""
    with env.db.conn.cursor() as cur:
        # psycopg2's own quoting of the name alongside: both name the same column
        cur.execute(f"SELECT {string(text)} AS {ident(name)}, 1 AS " + sql.Identifier(name).as_string(cur))
        assert [column.name for column in cur.description] == [name, name]
        assert cur.fetchone()[0] == text


def log_based_problems(example: Example, changes: list[Change], first: Run, second: Run, after: Run) -> list[Problem]:
    """Each change is one record, in order: a delete carries the replica identity, others FULL_TABLE's bytes."""
    stream, columns, table = example.stream, example.columns, example.table
    lines = second.record_lines(stream)
    summary = f"{len(changes)} changes ({', '.join('delete' if c.deleted else 'upsert' for c in changes)})"
    if len(lines) != len(changes):
        kind = "loses changes" if len(lines) < len(changes) else "emits more records than changes"
        partitioned = " of a partitioned table" if table.partitioning else ""
        return [Problem(f"LOG_BASED {kind}{partitioned}", f"{len(lines)} records for {summary}:\n" + "\n".join(lines))]
    names = [c.name for c in columns]
    for line in lines:
        emitted = [name for name in values_of(line) if not name.startswith("_sdc_")]
        if emitted != names:
            return [Problem("LOG_BASED record has other columns", f"columns {emitted!r}, expected {names!r}")]
    before_bytes = Counter(raw_values(line) for line in first.record_lines(stream))
    after_bytes = Counter(raw_values(line) for line in after.record_lines(stream))
    key_positions = table.primary_key
    full_identity = table.replica_identity == "FULL"
    problems = []
    for number, (change, line) in enumerate(zip(changes, lines, strict=True), 1):
        record = values_of(line)
        where = f"change {number} of {summary}: {line[:1500]}"
        if (record.get("_sdc_deleted_at") is not None) != change.deleted:
            problems.append(Problem("LOG_BASED mixes up deletes and other changes", where))
            continue
        expected = change.row.expected(columns)
        if change.deleted and not full_identity:
            expected = [value if index in key_positions else None for index, value in enumerate(expected)]
        for column, value in zip(columns, expected, strict=True):
            if canonical(record.get(column.name)) != canonical(value):
                what = "delete" if change.deleted else "insert or update"
                problems.append(
                    Problem(
                        f"LOG_BASED {what} value differs: {column.type.base.family}{'[]' if column.type.array else ''}",
                        f"column {column.name!r} ({column.type.description}, replica identity "
                        f"{table.replica_identity}): emitted {record.get(column.name)!r}, expected {value!r}; {where}",
                    )
                )
        raw = raw_values(line)
        if not change.deleted:
            reference, counts = "FULL_TABLE after the changes", after_bytes
        elif full_identity:
            reference, counts = "the initial copy", before_bytes
        else:
            reference = "the initial copy's key"
            raw = tuple(raw[index] for index in key_positions)
            counts = Counter(tuple(row[index] for index in key_positions) for row in before_bytes.elements())
        if counts[raw] <= 0:
            problems.append(
                Problem(
                    "LOG_BASED bytes differ from FULL_TABLE", f"{raw!r} is not in {reference}: {list(counts)}; {where}"
                )
            )
        counts[raw] -= 1
    return problems


@generative("metadata")
@given(table=tables())
def test_catalog_streams_of_random_schemas_validate_against_their_schema(env, table):
    check_metadata(env, table)

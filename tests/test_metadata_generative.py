"""The catalog streams of the generative suite's random schemas, loaded through both real targets.

Each example builds a few random tables (tests/generative: odd names, every supported type, keys,
partitions), one of them wide, each in a schema of its own with a comment, a view and a
materialized view over it, ANALYZEs them, and runs the catalog streams (metadata_only) on that
database: every record is valid against its stream's SCHEMA under both drafts, its key is set and
unique, and the same output piped into pipelinewise-target-postgres and meltanolabs-target-postgres
leaves each stream's table holding what the tap emitted, row for row, after each target's rules
(tests/targets/compare.py). The database has pg_stat_statements, so statement usage carries the
examples' statements, hostile names and all.

`make test` runs BOUNDED_EXAMPLES derandomized examples; `make catalog-fuzz` runs EXAMPLES (default
30) from SEED (default random, printed at the end), as `make fuzz` runs the other generative suites.
"""

from __future__ import annotations

import copy
import json

import pytest
from conftest import new_database, select_all, statements_cluster
from generative.builder import Example
from generative.fuzzing import fuzz_settings, shrinking_capped
from generative.runner import Problem, check_schema, defect, gravest_first, run_tap, validate_record, validators_of
from generative.script import ident, string
from generative.strategies import hostile_tables, tables, unique_name
from hypothesis import currently_in_test_context, given, note
from hypothesis import strategies as st
from psycopg2 import sql
from targets.compare import loaded_diffs, pipelinewise_collisions, streams_of
from targets.pipeline import TARGETS, load_into_targets, require_targets, target_config, target_database

# examples in the bounded run (make test): each loads its catalog streams into both targets
BOUNDED_EXAMPLES = {"targets": 2}
BOUNDED_SHRINK_SECONDS = 20
# the wide table's columns: enough that a target meets a stream of many rows per table
WIDE_COLUMNS = (20, 40)
# the kinds of problem, gravest first: a crash hides the rest
_SEVERITY = ("tap failed", "target failed", "record invalid", "schema invalid", "key", "target table")


@pytest.fixture(autouse=True)
def bounded_shrinking():
    """Cap the time spent shrinking in the bounded run: each example loads two targets."""
    with shrinking_capped(BOUNDED_SHRINK_SECONDS):
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A database on a cluster with pg_stat_statements, holding the extensions the random types use."""
    with statements_cluster() as cluster:
        if cluster.version_num < 140000:
            pytest.skip("the generators draw multiranges and numeric infinities, which need 14 or later")
        database = new_database(cluster, "catalog_random", tmp_path_factory.mktemp("catalog_random"))
        database.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hstore; CREATE EXTENSION citext")
        try:
            yield database
        finally:
            database.conn.close()


@pytest.fixture(scope="module")
def target_conn(source):
    """The database both targets load into, a schema per target and example."""
    require_targets()
    with target_database(source.server, "catalog_random_target") as conn:
        yield conn


@pytest.fixture(scope="module")
def catalog(source):
    """The metadata_only catalog, every stream selected (its entries depend on neither the database nor the data)."""
    discovered = run_tap(source.tmp_dir, metadata_config(source), discover=True)
    assert not discovered.failed, discovered.failure()
    return select_all(json.loads("\n".join(discovered.lines)))


def metadata_config(db) -> dict:
    return dict(db.config, metadata_only=True)


def random_schemas() -> st.SearchStrategy:
    """A wide random table and one to three others, each in a schema of its own."""

    def with_others(wide):
        others = tables().filter(lambda table: table.schema != wide.schema)
        return st.lists(others, min_size=1, max_size=3, unique_by=lambda table: table.schema).map(
            lambda drawn: [wide, *drawn]
        )

    return tables(min_columns=WIDE_COLUMNS[0], max_columns=WIDE_COLUMNS[1], max_rows=3).flatmap(with_others)


def build(source, table) -> Example:
    """Build the table, then comment on it, put a view and a materialized view over it and ANALYZE them."""
    example = Example(source.conn, table)
    example.drop()
    example.build()
    run, schema = example.script.run, ident(example.schema)
    taken = {name for (name,) in run(
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "UNION SELECT typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s",
        (table.schema, table.schema), show=False,
    )}  # fmt: skip
    view = f"{schema}.{ident(unique_name(table.name + ' v', taken))}"
    materialized = f"{schema}.{ident(unique_name(table.name + ' m', taken))}"
    first = ident(table.columns[0].name)
    flag = ident(unique_name("is null", {column.name for column in table.columns}))
    run(f"COMMENT ON TABLE {example.qualified} IS {string(table.schema)}")
    # a column computed from the first, and a filter on it: lineage of each kind
    run(f"CREATE VIEW {view} AS SELECT t.*, t.{first} IS NULL AS {flag} FROM {example.qualified} AS t "
        f"WHERE t.{first} IS NOT NULL OR random() >= 0")  # fmt: skip
    run(f"CREATE MATERIALIZED VIEW {materialized} AS SELECT * FROM {view}")
    run(f"ANALYZE {example.qualified}")
    run(f"ANALYZE {materialized}")
    return example


def record_problems(lines: list[str]) -> list[Problem]:
    """Every SCHEMA valid, every RECORD valid against its stream's under both drafts, its key set and unique."""
    problems, validators, keys, seen = [], {}, {}, set()
    for line in lines:
        message = json.loads(line)
        stream = message.get("stream")
        if message["type"] == "SCHEMA":
            problems += check_schema(message["schema"])
            validators[stream] = validators_of(line)
            keys[stream] = message["key_properties"]
        elif message["type"] == "RECORD":
            record = json.loads(line, parse_float=float)["record"]
            problems += [
                Problem(p.kind, f"{stream}: {p.detail}") for p in validate_record(validators[stream], record, {})
            ]
            key = tuple(record.get(name) for name in keys[stream])
            if None in key:
                problems.append(Problem(f"key not set: {stream}", f"{keys[stream]} of {record}"))
            elif (stream, key) in seen:
                problems.append(Problem(f"key emitted twice: {stream}", f"{keys[stream]} = {key}"))
            seen.add((stream, key))
    return problems


def loadable_targets(lines: list[str]) -> list[str]:
    """The targets that can load this output: not pipelinewise where two keys are one to it (a known
    limit of that target, the README says), which is noted instead."""
    schemas, records = streams_of(lines)
    for stream, emitted in records.items():
        schema = schemas[stream]
        collisions = pipelinewise_collisions(emitted, schema["schema"], schema["key_properties"])
        if collisions:
            shown(f"pipelinewise not loaded: {stream} keys {collisions[:3]} are one key to it")
            return [target for target in TARGETS if target != "pipelinewise"]
    return list(TARGETS)


def shown(text: str) -> None:
    """Note `text` for the report of a failing example (print it in a fixed one)."""
    (note if currently_in_test_context() else print)(text)


def fail(problems: list[Problem]) -> None:
    """Raise the gravest problem as an exception class of its own kind (hypothesis shrinks each kind apart)."""
    if not problems:
        return
    first, *others = gravest_first(problems, _SEVERITY, unranked=len(_SEVERITY))
    also = "".join(f"\n  also {p.kind}: {p.detail[:500]}" for p in others[:7])
    raise defect(first.kind)(f"{first.kind}\n{first.detail[:4000]}{also}")


def check_random_schemas(source, target_conn, catalog, tmp_path, drawn) -> None:
    """Build the tables, run the catalog streams, validate them and load them into both targets."""
    built = []
    try:
        for table in drawn:
            built.append(build(source, table))
        run = run_tap(source.tmp_dir, metadata_config(source), copy.deepcopy(catalog))
        if run.failed:
            fail([Problem(f"tap failed: {run.failure_kind()}", run.failure())])
        fail(record_problems(run.lines))
        number = len(list(tmp_path.iterdir()))
        schemas = {target: f"{target}_{number}" for target in loadable_targets(run.lines)}
        configs = {t: target_config(t, source.server, "catalog_random_target", s) for t, s in schemas.items()}
        try:
            load_into_targets(tmp_path / str(number), ("\n".join(run.lines) + "\n").encode(), configs)
        except AssertionError as exc:
            fail([Problem("target failed", str(exc))])
        problems = [
            Problem(f"target table differs: {target} {stream}", diff.report())
            for target, schema in schemas.items()
            for stream, diff in loaded_diffs(run.lines, target_conn, target, schema).items()
        ]
        with target_conn.cursor() as cur:
            for schema in schemas.values():
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        fail(problems)
    finally:
        for example in built:
            shown(f"-- {example.table!r}\n{example.script.text()}")
            example.drop()


@fuzz_settings(BOUNDED_EXAMPLES, "targets")
@given(drawn=random_schemas())
def test_catalog_streams_of_random_schemas_load_through_both_targets(source, target_conn, catalog, tmp_path, drawn):
    check_random_schemas(source, target_conn, catalog, tmp_path, drawn)


def test_catalog_streams_of_the_hostile_tables_load_through_both_targets(source, target_conn, catalog, tmp_path):
    """The generative suite's hostile tables in every bounded run: quotes, braces, percent signs, a comma and
    a line break in schema, table, column, type and enum label names."""
    check_random_schemas(source, target_conn, catalog, tmp_path, [table for table, _ in hostile_tables()])

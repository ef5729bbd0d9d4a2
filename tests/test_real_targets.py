"""The tap piped into real targets (pipelinewise-target-postgres, meltanolabs-target-postgres) loads what the source holds."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest
from conftest import select_all
from targets.compare import compare_table
from targets.pipeline import (
    TARGETS,
    require_targets,
    run_pipeline,
    target_config,
    target_database,
    target_executable,
)

# (column, type, value of generated row g); every type family of tap_postgres/types.py
COLUMNS = [
    ("c_int2", "smallint NOT NULL", "(g % 32767)::smallint"),
    ("c_int4", "integer", "CASE WHEN g % 7 <> 0 THEN g * -3 END"),
    ("c_int8", "bigint", "g * 1000000000007"),
    ("c_oid", "oid", "(g * 1000)::oid"),
    ("c_num", "numeric(12,2) NOT NULL", "g * 1.25"),
    ("c_num_free", "numeric", "g / 7::numeric"),
    ("c_real", "real", "g / 3.0"),
    ("c_double", "double precision", "g / 7.0"),
    ("c_money", "money", "g * 1.5"),
    ("c_bool", "boolean", "g % 2 = 0"),
    ("c_bit1", "bit(1)", "(g % 2)::bit(1)"),
    ("c_bit4", "bit(4)", "(g % 16)::bit(4)"),
    ("c_varbit", "varbit", "(g % 64)::bit(6)::varbit"),
    ("c_char", "char(4)", "left(g::text, 3)"),
    ("c_varchar", "varchar(10) NOT NULL", "'v' || g"),
    ("c_text", "text", "'line ' || g || E'\\nsecond \"quoted\" \\\\ tab\\t \u00e9 \u2603'"),
    ("c_citext", "citext", "'CiText' || g"),
    ("c_name", "name", "'name_' || g"),
    ("c_uuid", "uuid", "md5(g::text)::uuid"),
    ("c_json", "json", "json_build_object('g', g, 'list', json_build_array(g, 'x', NULL))"),
    ("c_jsonb", "jsonb", "jsonb_build_object('nested', jsonb_build_object('g', g), 'f', g / 4.0)"),
    ("c_hstore", "hstore", "hstore('k' || g, g::text) || hstore('empty', NULL)"),
    ("c_date", "date", "date '2024-01-01' + g"),
    ("c_ts", "timestamp", "timestamp '2024-01-01 00:00:00.123456' + g * interval '1 hour 1 second'"),
    ("c_tstz", "timestamptz NOT NULL", "timestamptz '2024-01-01 12:00:00+05' + g * interval '1 day 1 microsecond'"),
    ("c_time", "time", "time '00:00:00.5' + g * interval '1 minute'"),
    ("c_timetz", "timetz", "'10:00:00+02'::timetz + g * interval '1 minute'"),
    ("c_interval", "interval", "g * interval '1 day 2 hours 3.5 seconds'"),
    ("c_inet", "inet", "('10.0.' || (g % 256) || '.1/24')::inet"),
    ("c_cidr", "cidr", "('10.' || (g % 256) || '.0.0/16')::cidr"),
    ("c_macaddr", "macaddr", "('08:00:2b:01:02:' || lpad(to_hex(g % 256), 2, '0'))::macaddr"),
    ("c_macaddr8", "macaddr8", "('08:00:2b:01:02:03:04:' || lpad(to_hex(g % 256), 2, '0'))::macaddr8"),
    ("c_bytea", "bytea", "decode(md5(g::text), 'hex')"),
    ("c_xml", "xml", "('<v>' || g || '</v>')::xml"),
    ("c_tsvector", "tsvector", "to_tsvector('simple', 'fat cat ' || g)"),
    ("c_tsquery", "tsquery", "('fat & c' || g)::tsquery"),
    ("c_lsn", "pg_lsn", "('16/' || to_hex(g))::pg_lsn"),
    ("c_point", "point", "point(g, -g)"),
    ("c_line", "line", "line(point(0, 0), point(g, g + 1))"),
    ("c_lseg", "lseg", "lseg(point(0, 0), point(g, g))"),
    ("c_box", "box", "box(point(0, 0), point(g, g))"),
    ("c_path", "path", "('[(0,0),(' || g || ',1)]')::path"),
    ("c_polygon", "polygon", "polygon(box(point(0, 0), point(g, g)))"),
    ("c_circle", "circle", "circle(point(g, 0), g)"),
    ("c_mood", "mood", "(enum_range(NULL::mood))[g % 3 + 1]"),
    ("c_range", "int4range", "int4range(g, g + 10)"),
    ("c_multirange", "int4multirange", "int4multirange(int4range(1, g + 2), int4range(g + 5, g + 9))"),
    ("c_domain", "positive_amount", "g * 0.5 + 0.01"),
    ("r", "text", "'column r ' || g"),  # `r` once collided with the render query's alias
    ("c_int_arr", "integer[]", "ARRAY[g, NULL, -g]"),
    ("c_text_arr", "text[]", "ARRAY['a ' || g, NULL, 'q\"' || g]"),
    ("c_num_arr", "numeric[]", "ARRAY[g / 8.0, NULL, 'NaN']::numeric[]"),
    ("c_date_arr", "date[]", "ARRAY[date '2020-02-29' + g, NULL]"),
    ("c_tstz_arr", "timestamptz[]", "ARRAY[timestamptz '2024-01-01 10:00:00.25+01' + g * interval '1 second']"),
    ("c_jsonb_arr", "jsonb[]", "ARRAY[jsonb_build_object('k', g), '[1, null]'::jsonb]"),
    ("c_mood_arr", "mood[]", "ARRAY['sad', 'ok']::mood[]"),
    ("c_uuid_arr", "uuid[]", "ARRAY[md5(g::text)::uuid, NULL]"),
    ("c_bytea_arr", "bytea[]", "ARRAY[int4send(g)]"),
    ("c_domain_arr", "positive_amount[]", "ARRAY[g * 0.25 + 0.01]::positive_amount[]"),
    ("c_bool_arr", "boolean[]", "ARRAY[g % 2 = 0, NULL]"),
    ("c_matrix", "integer[][]", "ARRAY[[g, g + 1], [g + 2, g + 3]]"),
    ("updated_at", "timestamptz NOT NULL DEFAULT clock_timestamp()", "clock_timestamp()"),
]
# Rows of values a target could mishandle; columns not named are NULL (or their generated value if NOT NULL).
EDGE_ROWS = [
    {},  # every nullable column NULL
    {
        "c_int2": "-32768",
        "c_int4": "2147483647",
        "c_int8": "9223372036854775807",
        "c_oid": "4294967295",
        "c_num": "9999999999.99",
        "c_num_free": "123456789012345678901234567890.123456789",
        "c_real": "'NaN'",
        "c_double": "'-Infinity'",
        "c_varchar": "''",
        "c_text": "E'ctrl \\x01 end, emoji \U0001f600, backslash-n \\\\n'",
        "c_json": "'[]'",
        "c_jsonb": "'{}'",
        "c_hstore": "''",
        "c_date": "'infinity'",
        "c_ts": "'10000-01-01'",
        "c_tstz": "'infinity'",
        "c_time": "'24:00:00'",
        "c_timetz": "'23:30:00-03'",
        "c_bytea": "''",
        "c_int_arr": "'{}'",
        "c_text_arr": "'{\"\"}'",
        "c_num_arr": "'{Infinity}'",
    },
    {
        "c_num": "-0.01",
        "c_num_free": "0.000000000000000000000000000001",
        "c_real": "'Infinity'",
        "c_double": "1e308",
        "c_text": "''",
        "c_date": "'0044-03-15 BC'",
        "c_ts": "'-infinity'",
        "c_tstz": "'-infinity'",
        "c_num_arr": "'{}'",
        "c_matrix": "'{{1},{NULL}}'",
    },
]
GENERATED = 300
LOG_BASED_CONFIG = {"logical_poll_total_seconds": 2, "break_at_end_lsn": True}


def _insert_generated(db, first: int, last: int) -> None:
    names = ", ".join(name for name, _, _ in COLUMNS)
    values = ", ".join(expression for _, _, expression in COLUMNS)
    db.execute(
        f"INSERT INTO every_type (id, {names}) SELECT g, {values} FROM generate_series({int(first)}, {int(last)}) g"
    )


def _insert_edge_rows(db, first_id: int) -> None:
    for offset, row in enumerate(EDGE_ROWS):
        ident = first_id - offset
        values = {name: row.get(name) for name, _, _ in COLUMNS}
        for name, sql_type, expression in COLUMNS:
            if values[name] is None and "NOT NULL" in sql_type:
                values[name] = re.sub(r"\bg\b", str(abs(ident)), expression)
        chosen = {name: value for name, value in values.items() if value is not None}
        db.execute(f"INSERT INTO every_type (id, {', '.join(chosen)}) VALUES ({ident}, {', '.join(chosen.values())})")


@pytest.fixture(scope="module")
def source(db):
    """The source schema: every type, a partitioned table with a sub-partitioned partition, a view, a matview."""
    require_targets()
    # the cluster runs with synchronous_commit off: a LOG_BASED run started right after a change could
    # stop at a WAL position the change's commit has not been written to yet (it would come next run)
    db.execute("SET synchronous_commit = on")
    db.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    db.execute("CREATE DOMAIN positive_amount AS numeric(10, 2) CHECK (VALUE > 0)")
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type, _ in COLUMNS)
    db.execute(f"CREATE TABLE every_type (id integer PRIMARY KEY, {columns})")
    _insert_generated(db, 1, GENERATED)
    _insert_edge_rows(db, 0)

    db.execute(
        "CREATE TABLE measurements (id integer NOT NULL, region text NOT NULL, taken timestamptz NOT NULL, "
        "reading numeric(8, 2) NOT NULL, note text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        "PRIMARY KEY (id, region)) PARTITION BY LIST (region)"
    )
    db.execute("CREATE TABLE measurements_eu PARTITION OF measurements FOR VALUES IN ('eu')")
    db.execute("CREATE TABLE measurements_us PARTITION OF measurements FOR VALUES IN ('us') PARTITION BY RANGE (id)")
    db.execute("CREATE TABLE measurements_us_low PARTITION OF measurements_us FOR VALUES FROM (MINVALUE) TO (1000)")
    db.execute("CREATE TABLE measurements_us_high PARTITION OF measurements_us FOR VALUES FROM (1000) TO (MAXVALUE)")
    db.execute(
        "INSERT INTO measurements (id, region, taken, reading, note) "
        "SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, timestamptz '2024-06-01' + g * interval '1 hour', "
        "g * 0.75, CASE WHEN g % 5 <> 0 THEN 'note ' || g END FROM generate_series(1, 2000) g"
    )
    db.execute("CREATE VIEW eu_measurements AS SELECT id, reading, note FROM measurements WHERE region = 'eu'")
    db.execute(
        "CREATE MATERIALIZED VIEW mood_totals AS SELECT coalesce(c_mood::text, 'none') AS mood, count(*) AS n, "
        "sum(c_num) AS total, max(c_tstz) AS latest FROM every_type GROUP BY 1"
    )
    return db


@pytest.fixture(scope="module")
def target_db(server, source):
    """A database of its own on the same cluster that the targets load into: (name, connection)."""
    name = f"{source.name}_target"
    with target_database(server, name) as conn:
        yield name, conn


@pytest.fixture(scope="module")
def discovered(source):
    return source.discover()


# stream -> (source table, key columns); views are keyed through view-key-properties
STREAMS = {
    "public-every_type": ("every_type", ["id"]),
    "public-measurements": ("measurements", ["id", "region"]),
    "public-eu_measurements": ("eu_measurements", ["id"]),
    "public-mood_totals": ("mood_totals", ["mood"]),
}
TABLES = ("public-every_type", "public-measurements")


def _catalog(discovered: dict, method: str) -> dict:
    streams = set(STREAMS) if method == "FULL_TABLE" else set(TABLES)
    catalog = select_all(
        copy.deepcopy(discovered),
        method=method,
        replication_key="updated_at" if method == "INCREMENTAL" else None,
        only=streams,
    )
    for stream in catalog["streams"]:
        table_md = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
        if table_md.get("is-view") and stream["tap_stream_id"] in STREAMS:
            table_md["view-key-properties"] = STREAMS[stream["tap_stream_id"]][1]
    return catalog


def _source_keys(db, stream_ids) -> dict[str, set[tuple]]:
    keys = {}
    for stream_id in stream_ids:
        table, key_columns = STREAMS[stream_id]
        keys[stream_id] = set(db.query(f"SELECT {', '.join(key_columns)} FROM {table}"))
    return keys


def _change_the_source(db, first_new_id: int) -> None:
    """Insert, update and delete rows, in the partitioned table through its leaf partitions too."""
    _insert_generated(db, first_new_id, first_new_id + 4)
    db.execute(
        "UPDATE every_type SET c_text = 'changed ' || id, c_num = c_num + 1, c_int_arr = ARRAY[id, NULL], "
        "c_jsonb = '{\"changed\": true}', c_tstz_arr = NULL, updated_at = clock_timestamp() "
        "WHERE id IN (SELECT id FROM every_type WHERE id > 0 ORDER BY id LIMIT 3)"
    )
    db.execute("UPDATE every_type SET c_varchar = 'edge', updated_at = clock_timestamp() WHERE id = -1")
    db.execute(
        f"DELETE FROM every_type WHERE id IN (SELECT id FROM every_type WHERE id BETWEEN 1 AND {GENERATED} ORDER BY id DESC LIMIT 2)"
    )
    first = first_new_id
    db.execute(
        f"INSERT INTO measurements_eu VALUES ({first}, 'eu', now(), 1.5, 'new eu', clock_timestamp()); "
        f"INSERT INTO measurements_us_low VALUES ({first % 1000}, 'us', now(), 2.5, 'new us low', clock_timestamp()) "
        "ON CONFLICT DO NOTHING; "
        f"INSERT INTO measurements_us_high VALUES ({first + 1}, 'us', now(), 3.5, 'new us high', clock_timestamp()); "
        f"INSERT INTO measurements (id, region, taken, reading) VALUES ({first + 3}, 'us', now(), 4.5)"
    )
    db.execute(
        "UPDATE measurements_us_high SET reading = reading + 100, updated_at = clock_timestamp() "
        "WHERE id IN (SELECT id FROM measurements_us_high ORDER BY id LIMIT 2)"
    )
    db.execute("UPDATE measurements_us_low SET note = 'low changed', updated_at = clock_timestamp() WHERE id = 1")
    db.execute(
        "DELETE FROM measurements_eu WHERE id IN (SELECT id FROM measurements_eu WHERE id <= 2000 ORDER BY id DESC LIMIT 2)"
    )
    db.execute("DELETE FROM measurements_us_high WHERE id = (SELECT max(id) FROM measurements_us_high WHERE id < 1999)")
    # moves a row from one partition to another: the old key disappears
    db.execute(
        "UPDATE measurements SET region = 'us', updated_at = clock_timestamp() "
        "WHERE (id, region) = (SELECT id, region FROM measurements WHERE region = 'eu' ORDER BY id LIMIT 1)"
    )
    db.execute("REFRESH MATERIALIZED VIEW mood_totals")


def _deletes_propagate(method: str, target: str) -> bool:
    """INCREMENTAL never sees deletes; pipelinewise ignores ACTIVATE_VERSION, so FULL_TABLE leaves them too."""
    if method == "INCREMENTAL":
        return False
    return not (method == "FULL_TABLE" and target == "pipelinewise")


def _assert_target_matches(source, target_db, schema, target, catalog, deleted=None):
    _, conn = target_db
    failures = []
    for stream in catalog["streams"]:
        table_md = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
        if not table_md.get("selected"):
            continue
        table, key_columns = STREAMS[stream["tap_stream_id"]]
        leftovers = None if deleted is None else deleted.get(stream["tap_stream_id"], set())
        diff = compare_table(source.conn, "public", table, conn, schema, target, key_columns, deleted_keys=leftovers)
        if diff:
            failures.append(f"{stream['tap_stream_id']} in {target}:{schema}:\n{diff.report()}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("method", ["FULL_TABLE", "INCREMENTAL", "LOG_BASED"])
def test_target_tables_equal_the_source_after_a_first_and_a_second_run(
    source, target_db, discovered, tmp_path, method, target
):
    target_dbname, _ = target_db
    schema = f"{target}_{method}".lower()
    catalog = _catalog(discovered, method)
    tap_config = dict(source.config)
    slot = None
    if method == "LOG_BASED":
        tap_config.update(LOG_BASED_CONFIG, tap_id=target)
        slot = source.create_slot(f"pipelinewise_{source.name}_{target}")
    config = target_config(target, source.server, target_dbname, schema)
    stream_ids = [s["tap_stream_id"] for s in catalog["streams"] if s["metadata"][0]["metadata"].get("selected")]
    try:
        first = run_pipeline(tmp_path / "run1", target, tap_config, catalog, None, config)
        assert first.last_state is not None, f"the target printed no STATE\n{first.describe()}"
        _assert_target_matches(source, target_db, schema, target, catalog)

        before = _source_keys(source, stream_ids)
        first_new_id = 10000 + 100 * (
            ["FULL_TABLE", "INCREMENTAL", "LOG_BASED"].index(method) * 2 + TARGETS.index(target)
        )
        _change_the_source(source, first_new_id)
        after = _source_keys(source, stream_ids)
        deleted = None if _deletes_propagate(method, target) else {s: before[s] - after[s] for s in stream_ids}

        second = run_pipeline(tmp_path / "run2", target, tap_config, catalog, first.last_state, config)
        assert second.last_state is not None, f"the target printed no STATE\n{second.describe()}"
        _assert_target_matches(source, target_db, schema, target, catalog, deleted)
    finally:
        if slot:
            source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_batch_run_into_meltanolabs_target_loads_the_source(source, target_db, discovered, tmp_path, compression):
    """FULL_TABLE into BATCH files that target-postgres loads itself: twice, the second a new version
    whose ACTIVATE_VERSION, before its files, replaces what the first loaded."""
    target_dbname, _ = target_db
    schema = f"meltanolabs_batch_{compression}"
    catalog = _catalog(discovered, "FULL_TABLE")
    batch_config = {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": (tmp_path / "batches").as_uri()},
        "batch_size": 400,
    }
    tap_config = dict(source.config, batch_config=batch_config)
    config = target_config("meltanolabs", source.server, target_dbname, schema)
    for number in (1, 2):
        pipeline = run_pipeline(tmp_path / f"run{number}", "meltanolabs", tap_config, catalog, None, config)
        assert pipeline.last_state is not None, f"the target printed no STATE\n{pipeline.describe()}"
        _assert_target_matches(source, target_db, schema, "meltanolabs", catalog)
    assert any((tmp_path / "batches").iterdir())


def test_unpopulated_materialized_view_does_not_stop_the_pipeline(source, target_db, discovered, tmp_path):
    source.execute("CREATE MATERIALIZED VIEW not_yet_populated AS SELECT id, c_text FROM every_type WITH NO DATA")
    try:
        catalog = select_all(source.discover(), only={"public-not_yet_populated", "public-eu_measurements"})
        target_dbname, conn = target_db
        config = target_config("pipelinewise", source.server, target_dbname, "unpopulated")
        run_pipeline(tmp_path, "pipelinewise", source.config, catalog, None, config)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM unpopulated.eu_measurements")
            assert cur.fetchone()[0] == source.query("SELECT count(*) FROM eu_measurements")[0][0]
            cur.execute("SELECT to_regclass('unpopulated.not_yet_populated') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute("SELECT count(*) FROM unpopulated.not_yet_populated")
                assert cur.fetchone()[0] == 0
    finally:
        source.execute("DROP MATERIALIZED VIEW not_yet_populated")


def _singer_lines(record: dict) -> bytes:
    schema = {
        "type": "object",
        "properties": {"id": {"type": ["integer"]}, "code": {"type": ["null", "string"], "maxLength": 3}},
    }
    messages = [
        {"type": "SCHEMA", "stream": "public-checked", "schema": schema, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "public-checked", "record": record},
        {"type": "STATE", "value": {"bookmarks": {}}},
    ]
    return "".join(json.dumps(message) + "\n" for message in messages).encode()


@pytest.mark.parametrize(
    ("record", "accepted"),
    [({"id": 1, "code": "abc"}, True), ({"id": 2, "code": "abcd"}, False)],
    ids=["valid record loads", "too long string fails"],
)
def test_meltanolabs_target_rejects_a_record_that_breaks_its_schema(source, target_db, tmp_path, record, accepted):
    """The singer-sdk target validates every record: the round trip above proves the tap's records valid."""
    config = target_config("meltanolabs", source.server, target_db[0], "validation")
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    result = subprocess.run(
        [str(target_executable("meltanolabs")), "--config", str(config_path)],
        input=_singer_lines(record),
        capture_output=True,
        timeout=120,
    )
    stderr = result.stderr.decode(errors="replace")
    if accepted:
        assert result.returncode == 0, stderr[-3000:]
    else:
        assert result.returncode != 0 and "Record validation failed" in stderr, stderr[-3000:]

"""Discovery: every table-like relation, pipelinewise's metadata, and a JSON schema for every type."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

SCHEMA_SQL = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_amount AS numeric(10, 2) CHECK (VALUE > 0);
CREATE DOMAIN short_code AS varchar(8);

CREATE TABLE every_type (
    id serial PRIMARY KEY,
    c_smallint smallint, c_integer integer NOT NULL DEFAULT 0, c_bigint bigint,
    c_numeric_12_2 numeric(12, 2), c_numeric numeric, c_real real, c_double double precision, c_money money,
    c_boolean boolean, c_bit1 bit(1), c_bit8 bit(8), c_varbit varbit(16),
    c_char char(3), c_varchar varchar(20), c_varchar_unbounded varchar, c_text text, c_citext citext, c_name name,
    c_uuid uuid, c_json json, c_jsonb jsonb, c_hstore hstore,
    c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, c_timestamptz timestamptz,
    c_interval interval, c_inet inet, c_cidr cidr, c_macaddr macaddr, c_macaddr8 macaddr8,
    c_bytea bytea, c_xml xml, c_tsvector tsvector, c_mood mood, c_amount positive_amount, c_code short_code,
    c_int4range int4range, c_tstzrange tstzrange, c_point point, c_polygon polygon, c_oid oid,
    c_int_array integer[], c_text_array text[], c_numeric_array numeric(5, 1)[], c_date_array date[],
    c_mood_array mood[], c_jsonb_array jsonb[], c_pg_lsn pg_lsn, c_regclass regclass
);
COMMENT ON TABLE every_type IS 'One column of each type';
COMMENT ON COLUMN every_type.c_text IS 'free text';

CREATE TABLE "Mixed Case ""Quoted"" table" ("Column With Spaces" text, "camelCase" int NOT NULL);
CREATE TABLE composite_key (tenant int, id bigint, payload text, PRIMARY KEY (tenant, id));
CREATE VIEW every_type_view AS SELECT id, c_text FROM every_type;
CREATE MATERIALIZED VIEW every_type_matview AS SELECT id, c_integer FROM every_type;
CREATE TABLE measurements (id bigint, taken date NOT NULL, value real, PRIMARY KEY (id, taken))
    PARTITION BY RANGE (taken);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE SCHEMA sales;
CREATE TABLE sales.orders (order_id bigint PRIMARY KEY, placed_at timestamptz NOT NULL);
"""


@pytest.fixture(scope="module")
def catalog(db):
    db.execute(SCHEMA_SQL)
    db.execute("ANALYZE")
    # numbers with a fraction as Decimal: schema bounds are exact, as a Decimal-parsing target reads them
    return json.loads(json.dumps(db.discover()), parse_float=Decimal)


def stream(catalog: dict, stream_id: str) -> dict:
    return next(entry for entry in catalog["streams"] if entry["tap_stream_id"] == stream_id)


def table_metadata(entry: dict) -> dict:
    return next(item["metadata"] for item in entry["metadata"] if item["breadcrumb"] == [])


def column_metadata(entry: dict, column: str) -> dict:
    return next(item["metadata"] for item in entry["metadata"] if item["breadcrumb"] == ["properties", column])


def test_streams_are_named_schema_dash_table(catalog):
    assert [entry["tap_stream_id"] for entry in catalog["streams"]] == [
        'public-Mixed Case "Quoted" table',
        "public-composite_key",
        "public-every_type",
        "public-every_type_matview",
        "public-every_type_view",
        "public-measurements",
        "sales-orders",
    ]
    orders = stream(catalog, "sales-orders")
    assert orders["stream"] == "orders"
    assert orders["table_name"] == "orders"


def test_table_metadata_matches_pipelinewise(catalog, db):
    assert table_metadata(stream(catalog, "public-composite_key")) == {
        "table-key-properties": ["tenant", "id"],
        "schema-name": "public",
        "database-name": db.name,
        "row-count": 0,
        "is-view": False,
        "valid-replication-keys": ["tenant", "id", "payload"],
    }


def test_views_have_no_key_and_nullable_columns(catalog):
    view = stream(catalog, "public-every_type_view")
    assert table_metadata(view)["is-view"] is True
    assert table_metadata(view)["table-key-properties"] == []
    assert view["schema"]["properties"]["id"]["type"] == ["null", "integer"]
    assert table_metadata(stream(catalog, "public-every_type_matview"))["is-view"] is True


def test_partitioned_table_is_one_stream_without_its_partitions(catalog):
    parent = stream(catalog, "public-measurements")
    assert table_metadata(parent)["table-key-properties"] == ["id", "taken"]
    assert not any(entry["tap_stream_id"] == "public-measurements_2024" for entry in catalog["streams"])


def test_include_partitions_lists_leaf_partitions(db, catalog):
    with_partitions = db.discover(dict(db.config, include_partitions=True))
    assert "public-measurements_2024" in [entry["tap_stream_id"] for entry in with_partitions["streams"]]


def test_filter_schemas_keeps_only_those_schemas(db, catalog):
    only_sales = db.discover(dict(db.config, filter_schemas="sales, no_such_schema"))
    assert [entry["tap_stream_id"] for entry in only_sales["streams"]] == ["sales-orders"]


def test_odd_identifiers_keep_their_exact_names(catalog):
    entry = stream(catalog, 'public-Mixed Case "Quoted" table')
    assert entry["stream"] == 'Mixed Case "Quoted" table'
    assert entry["schema"]["properties"] == {
        "Column With Spaces": {"type": ["null", "string"]},
        "camelCase": {"type": ["integer"], "minimum": -(2**31), "maximum": 2**31 - 1},
    }
    assert table_metadata(entry)["table-key-properties"] == []


def test_comments_become_descriptions(catalog):
    entry = stream(catalog, "public-every_type")
    assert entry["schema"]["description"] == "One column of each type"
    assert entry["schema"]["properties"]["c_text"]["description"] == "free text"


EXPECTED_SCHEMAS = {
    "id": {"type": ["integer"], "minimum": -(2**31), "maximum": 2**31 - 1},
    "c_smallint": {"type": ["null", "integer"], "minimum": -32768, "maximum": 32767},
    "c_integer": {"type": ["integer"], "minimum": -(2**31), "maximum": 2**31 - 1},
    "c_bigint": {"type": ["null", "integer"], "minimum": -(2**63), "maximum": 2**63 - 1},
    # inclusive bounds, exact, valid under every draft; no multipleOf (see types._numeric_schema)
    "c_numeric_12_2": {
        "type": ["null", "number"],
        "minimum": Decimal("-9999999999.99"),
        "maximum": Decimal("9999999999.99"),
    },
    "c_numeric": {"type": ["null", "number"]},
    "c_real": {"type": ["null", "number"]},
    "c_double": {"type": ["null", "number"]},
    "c_money": {"type": ["null", "string"]},
    "c_boolean": {"type": ["null", "boolean"]},
    "c_bit1": {"type": ["null", "boolean"]},
    "c_bit8": {"type": ["null", "string"]},
    "c_varbit": {"type": ["null", "string"]},
    "c_char": {"type": ["null", "string"], "maxLength": 3},
    "c_varchar": {"type": ["null", "string"], "maxLength": 20},
    "c_varchar_unbounded": {"type": ["null", "string"]},
    "c_text": {"type": ["null", "string"], "description": "free text"},
    "c_citext": {"type": ["null", "string"]},
    "c_name": {"type": ["null", "string"]},
    "c_uuid": {"type": ["null", "string"]},
    # any JSON value, scalars and null included, whether the column is NOT NULL or not
    "c_json": {"type": ["null", "object", "array", "string", "number", "boolean"]},
    "c_jsonb": {"type": ["null", "object", "array", "string", "number", "boolean"]},
    "c_hstore": {"type": ["null", "object"], "properties": {}},
    "c_date": {"type": ["null", "string"], "format": "date-time"},
    "c_time": {"type": ["null", "string"], "format": "time"},
    "c_timetz": {"type": ["null", "string"], "format": "time"},
    "c_timestamp": {"type": ["null", "string"], "format": "date-time"},
    "c_timestamptz": {"type": ["null", "string"], "format": "date-time"},
    "c_interval": {"type": ["null", "string"]},
    "c_inet": {"type": ["null", "string"]},
    "c_cidr": {"type": ["null", "string"]},
    "c_macaddr": {"type": ["null", "string"]},
    "c_macaddr8": {"type": ["null", "string"]},
    "c_bytea": {"type": ["null", "string"]},
    "c_xml": {"type": ["null", "string"]},
    "c_tsvector": {"type": ["null", "string"]},
    "c_mood": {"type": ["null", "string"]},
    "c_amount": {"type": ["null", "number"], "minimum": Decimal("-99999999.99"), "maximum": Decimal("99999999.99")},
    "c_code": {"type": ["null", "string"], "maxLength": 8},
    "c_int4range": {"type": ["null", "string"]},
    "c_tstzrange": {"type": ["null", "string"]},
    "c_point": {"type": ["null", "string"]},
    "c_polygon": {"type": ["null", "string"]},
    "c_oid": {"type": ["null", "integer"], "minimum": 0, "maximum": 2**32 - 1},
    "c_int_array": {
        "type": ["null", "array"],
        "items": {"type": ["null", "integer"], "minimum": -(2**31), "maximum": 2**31 - 1},
    },
    # elements are always nullable: PostgreSQL has no NOT NULL for array elements
    "c_text_array": {"type": ["null", "array"], "items": {"type": ["null", "string"]}},
    "c_numeric_array": {
        "type": ["null", "array"],
        "items": {"type": ["null", "number"], "minimum": Decimal("-9999.9"), "maximum": Decimal("9999.9")},
    },
    "c_date_array": {"type": ["null", "array"], "items": {"type": ["null", "string"], "format": "date-time"}},
    "c_mood_array": {"type": ["null", "array"], "items": {"type": ["null", "string"]}},
    "c_jsonb_array": {
        "type": ["null", "array"],
        "items": {"type": ["null", "object", "array", "string", "number", "boolean"]},
    },
    "c_pg_lsn": {"type": ["null", "string"]},
    "c_regclass": {},
}


@pytest.mark.parametrize("column", sorted(EXPECTED_SCHEMAS))
def test_column_schema(catalog, column):
    assert stream(catalog, "public-every_type")["schema"]["properties"][column] == EXPECTED_SCHEMAS[column]


def test_column_metadata_has_sql_datatype_and_inclusion(catalog):
    entry = stream(catalog, "public-every_type")
    assert column_metadata(entry, "id") == {
        "sql-datatype": "integer",
        "inclusion": "automatic",
        "selected-by-default": True,
    }
    assert column_metadata(entry, "c_varchar") == {
        "sql-datatype": "character varying",
        "inclusion": "available",
        "selected-by-default": True,
    }
    assert column_metadata(entry, "c_int_array")["sql-datatype"] == "integer[]"
    assert column_metadata(entry, "c_amount")["sql-datatype"] == "positive_amount"


def test_unknown_type_is_unsupported_with_a_warning(db, catalog):
    entry = stream(catalog, "public-every_type")
    assert column_metadata(entry, "c_regclass") == {
        "sql-datatype": "regclass",
        "inclusion": "unsupported",
        "selected-by-default": False,
    }
    assert "c_regclass" not in table_metadata(entry)["valid-replication-keys"]


def test_valid_replication_keys_exclude_unorderable_types(catalog):
    keys = table_metadata(stream(catalog, "public-every_type"))["valid-replication-keys"]
    assert {"id", "c_timestamp", "c_timestamptz", "c_date", "c_numeric", "c_text"} <= set(keys)
    assert not {"c_json", "c_jsonb", "c_hstore", "c_bytea", "c_int_array", "c_point"} & set(keys)


def test_columns_without_select_privilege_are_left_out_with_a_warning(db, catalog):
    db.execute("CREATE TABLE secrets (id int PRIMARY KEY, visible text, hidden text)")
    db.execute("DROP ROLE IF EXISTS limited_reader")
    db.execute("CREATE ROLE limited_reader LOGIN PASSWORD 'limited-pw'")
    db.execute("GRANT SELECT (id, visible) ON secrets TO limited_reader")
    config = dict(db.config, user="limited_reader", password="limited-pw")
    lines, stderr, _ = db.run_tap("--discover", config=config)
    streams = json.loads("\n".join(lines))["streams"]
    secrets = stream({"streams": streams}, "public-secrets")
    assert list(secrets["schema"]["properties"]) == ["id", "visible"]
    assert "Columns of public-secrets left out of the catalog, the user lacks SELECT on them: hidden" in stderr


def test_a_stream_without_a_replication_method_says_none_is_set_never_none(db, catalog):
    entry = json.loads(json.dumps(stream(catalog, "sales-orders"), default=str))
    table_metadata(entry)["selected"] = True
    table_metadata(entry).pop("replication-method", None)
    _, stderr, code = db.try_sync({"streams": [entry]})
    assert code != 0 and "None" not in "\n".join(stderr)
    assert stderr[-1].startswith('tap-postgres: error: stream "sales-orders" has no replication-method set: set it to')


def test_a_catalog_with_nothing_selected_warns_once_and_exits_0(db, catalog):
    unselected = json.loads(json.dumps(catalog, default=str))
    messages, stderr, code = db.try_sync(unselected)
    assert code == 0
    warnings = [line for line in stderr if "No stream is selected" in line]
    assert len(warnings) == 1 and '"selected": true' in warnings[0]
    assert not [m for m in messages if m["type"] == "RECORD"]


def test_tables_never_analyzed_get_a_row_count_estimated_from_their_size(db):
    # autovacuum_enabled = false: autovacuum would otherwise ANALYZE the table while the test runs
    # (it did once in CI), and the never-analyzed case would not be the one tested.
    db.execute(
        "CREATE SCHEMA fresh;"
        "CREATE TABLE fresh.plain (id int PRIMARY KEY, name text) WITH (autovacuum_enabled = false);"
        "INSERT INTO fresh.plain SELECT g, 'name ' || g FROM generate_series(1, 20000) g;"
        "CREATE TABLE fresh.parted (id int, at date) PARTITION BY RANGE (id);"
        "CREATE TABLE fresh.parted_low PARTITION OF fresh.parted FOR VALUES FROM (0) TO (5000)"
        "  WITH (autovacuum_enabled = false);"
        "CREATE TABLE fresh.parted_high PARTITION OF fresh.parted FOR VALUES FROM (5000) TO (100000)"
        "  PARTITION BY RANGE (id);"
        "CREATE TABLE fresh.parted_high_a PARTITION OF fresh.parted_high FOR VALUES FROM (5000) TO (100000)"
        "  WITH (autovacuum_enabled = false);"
        "INSERT INTO fresh.parted SELECT g, date '2024-01-01' + g % 300 FROM generate_series(1, 30000) g"
    )
    entries = {
        entry["tap_stream_id"]: entry for entry in db.discover({**db.config, "filter_schemas": "fresh"})["streams"]
    }
    # never analyzed: reltuples is -1 on 14+, 0 with no pages counted on 13
    assert db.query("SELECT relname FROM pg_class WHERE relname = 'plain' AND (reltuples < 0 OR relpages = 0)")
    for stream_id, rows in [("fresh-plain", 20000), ("fresh-parted", 30000)]:
        estimate = table_metadata(entries[stream_id])["row-count"]
        assert rows / 2 <= estimate <= rows * 2, (stream_id, estimate)
    db.execute("ANALYZE fresh.plain")
    analyzed = db.discover({**db.config, "filter_schemas": "fresh"})["streams"]
    assert [table_metadata(e)["row-count"] for e in analyzed if e["tap_stream_id"] == "fresh-plain"] == [20000]

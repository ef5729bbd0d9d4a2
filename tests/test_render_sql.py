"""The cheaper render expressions emit, byte for byte, what the expressions they replaced emitted.

For each family whose template changed, generated values (the edge cases included: NaN and the
infinities, 24:00:00, years past 9999 and BC, json with line breaks and tabs) go into a table and
the server renders each one with the old and the new template, alone and inside an array, in the
record object of a RECORD line: the texts must be equal. Runs on every server version the suite
is given (TAP_PG_VERSION).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from generative.fuzzing import quiet_settings
from hypothesis import given
from hypothesis import strategies as st
from psycopg2 import sql

from tap_postgres import types
from tap_postgres.connection import SESSION_SETTINGS

# The templates before the render cost work (issue 20 item 5), each as it was; arrays were then
# always rendered element by element (no plain_array).
OLD_TEMPLATES = {
    "numeric": "CASE WHEN {v} - {v} = 0 THEN {v} END",
    "timestamp": (
        "CASE WHEN ({v})::timestamptz > '9999-12-31 23:59:59.999999+00' THEN '9999-12-31 23:59:59.999999+00'::timestamptz "
        "WHEN ({v})::timestamptz < '0001-01-01 00:00:00+00' THEN '0001-01-01 00:00:00+00'::timestamptz "
        "ELSE ({v})::timestamptz END"
    ),
    "json": "translate({v}::text, E'\\n\\r', '  ')::json",
    "time": "replace({v}::text, '24:00:00', '00:00:00')",
}
OLD_TEMPLATES["timestamptz"] = OLD_TEMPLATES["timestamp"]


# Values each test renders whatever the examples drawn: the ones the templates decide on
EDGES = {
    "numeric": ["NaN", "0", "-0", "0.000", "1e-30", "-12345678901234567890.123456789"],
    "timestamp": [
        "infinity",
        "-infinity",
        "9999-12-31 23:59:59.999999",
        "10000-01-01 00:00:00",
        "0001-01-01 00:00:00",
        "0001-12-31 23:59:59.999999 BC",
        "294276-12-31 23:59:59.999999",
        "4713-11-24 00:00:00 BC",
    ],
    "time": ["24:00:00", "00:00:00", "23:59:59.999999", "23:59:60"],
    "json": ['{"a":\n1}', "[1,\r\n2]", '{\t"a": "x\\ny"}', " null ", '"24:00:00"', "\n[\n]\n"],
}
EDGES["timestamptz"] = EDGES["timestamp"]
INFINITE_NUMERICS = ["Infinity", "-Infinity"]  # PostgreSQL 14+


def _numeric_texts():
    return st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str)


def _timestamp_texts():
    years = st.one_of(st.integers(1, 9999), st.integers(10000, 294276), st.integers(1, 4713).map(lambda y: -y))
    fraction = st.one_of(st.just(0), st.integers(0, 999999))

    def text(year, month, day, hour, minute, second, micro):
        when = f"{abs(year):04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}.{micro:06d}"
        return when + (" BC" if year < 0 else "")

    moments = st.builds(
        text,
        years,
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        fraction,
    )
    return moments


def _time_texts():
    return st.times().map(lambda t: t.isoformat())


_JSON_SPACE = st.text(alphabet=" \t\n\r", max_size=3)


def _json_texts():
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
        ),
        max_leaves=6,
    )

    @st.composite
    def spaced(draw):
        # JSON's whitespace (space, tab, newline, return) between tokens, where json keeps it
        text = json.dumps(draw(values))
        out = []
        in_string = escaped = False
        for char in text:
            out.append(char)
            if in_string:
                escaped = char == "\\" and not escaped
                in_string = char != '"' or escaped
            elif char == '"':
                in_string = True
            elif char in ",:[]{}":
                out.append(draw(_JSON_SPACE))
        return draw(_JSON_SPACE) + "".join(out) + draw(_JSON_SPACE)

    return spaced()


# type name: the strategy of its values' text
CASES = {
    "numeric": _numeric_texts(),
    "timestamp": _timestamp_texts(),
    "timestamptz": _timestamp_texts(),
    "time": _time_texts(),
    "json": _json_texts(),
}


def _column_type(name: str, is_array: bool) -> types.ColumnType:
    category = {"numeric": "N", "json": "U"}.get(name, "D")
    return types.ColumnType(base_name=name, base_kind="b", base_category=category, is_array=is_array)


def _rendered(column: types.ColumnType, template: str | None) -> sql.Composable:
    """Return render_sql of `source.c`, with `template` (and arrays element by element, as before) when given."""
    family = types.FAMILIES_BY_NAME[column.base_name]
    if template is not None:
        family = dataclasses.replace(family, render=template, plain_array=None)
    saved = types.FAMILIES_BY_NAME[column.base_name]
    types.FAMILIES_BY_NAME[column.base_name] = family
    try:
        return types.render_sql(column, sql.Identifier("source", "c"))
    finally:
        types.FAMILIES_BY_NAME[column.base_name] = saved


@pytest.fixture(scope="module")
def session(db):
    """The test database's connection, with the tap's pinned session settings."""
    with db.conn.cursor() as cur:
        for name, value in SESSION_SETTINGS.items():
            cur.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    return db


def _renders(db, name: str, texts: list[str | None]) -> list[tuple]:
    """Return the (old, new) record object text of each value as a scalar, in a one- and a two-dimensional
    array, and of all the values in one array (row n = len(texts))."""
    table = sql.Identifier(f"render_{name}")
    db.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (n int, c {t}, a {t}[], m {t}[])").format(table, t=sql.SQL(name))
    )
    db.execute(sql.SQL("TRUNCATE {}").format(table))
    with db.conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} VALUES (%s, %s::{t}, ARRAY[%s::{t}, NULL], ARRAY[[%s::{t}, %s::{t}], [NULL, %s::{t}]])"
            ).format(table, t=sql.SQL(name)),
            [(n, text, text, text, text, text) for n, text in enumerate(texts)],
        )
        cur.execute(
            sql.SQL("INSERT INTO {} (n, a) VALUES (%s, %s::text[]::{t}[])").format(table, t=sql.SQL(name)),
            (len(texts), texts),
        )
    outputs = []
    for value in ("c", "a", "m"):
        column = _column_type(name, is_array=value != "c")
        old, new = (_rendered(column, OLD_TEMPLATES[name]), _rendered(column, None))
        outputs += db.query(
            sql.SQL(
                "SELECT n, (SELECT row_to_json(o.*)::text FROM (SELECT {old} AS c) o), "
                "(SELECT row_to_json(w.*)::text FROM (SELECT {new} AS c) w) "
                "FROM (SELECT n, {value} AS c FROM {table}) AS source ORDER BY n"
            ).format(old=old, new=new, value=sql.Identifier(value), table=table)
        )
    return outputs


@pytest.mark.parametrize("name", list(CASES))
def test_a_changed_template_renders_every_value_as_the_old_one_did(session, name):
    edges = EDGES[name] + (INFINITE_NUMERICS if name == "numeric" and session.server.version_num >= 140000 else [])

    def check(texts):
        for n, old, new in _renders(session, name, texts):
            assert new == old, (name, texts[n] if n < len(texts) else texts)

    check([None, *edges])
    quiet_settings(25, derandomize=True)(
        given(st.lists(st.one_of(st.none(), CASES[name]), min_size=1, max_size=20))(check)
    )()

"""The values LOG_BASED renders in the tap (sync/local_render.py) are the server's render_sql bytes, family by family.

Each example is a table of one to three columns of the families the tap renders itself (domains
over them too), with hostile names and generated values: every awkward character in strings,
numerics of hundreds of digits, floats' edges (-0, NaN, the infinities, the smallest and largest),
jsonb of every shape, intervals, network addresses and text search values, dates and timestamps
BC, past 9999 and infinite, in every time zone. The server renders each row as the render query does
(types.render_sql, row_to_json); the tap renders the values' text as the walsender prints it (its
output function, which format('%s') calls, in a session of the tap's pinned settings: a cast to
text is not it for boolean or char(n)) through LocalRows; the bytes must be
equal, `_sdc_lsn` included. Where the server has wal2json, the same rows are read back through it
(its own JSON, parsed as the WAL pass parses it, numerics' text cut out by
decoders.wal2json_values) and must give the same bytes too.
"""

from __future__ import annotations

import itertools
import struct

import psycopg2
import pytest
from generative import strategies as gs
from generative.fuzzing import fuzz_settings, shrinking_capped
from generative.script import ident, string
from hypothesis import assume, given, note
from hypothesis import strategies as st
from psycopg2 import sql

from tap_postgres.catalog import DELETED_AT, LSN
from tap_postgres.config import parse_config
from tap_postgres.connection import connect
from tap_postgres.discovery import describe_tables
from tap_postgres.state import int_to_lsn
from tap_postgres.sync.decoders import Change, Wal2jsonDecoder, wal2json_values
from tap_postgres.sync.local_render import LocalOptions, LocalRows
from tap_postgres.sync.rows import rendered_columns

EXAMPLES = {"local_render": 10}
_schemas = itertools.count()
_TEXT = gs.free_text(40)


# A negative scale is taken from PostgreSQL 15 on.
NEGATIVE_SCALE = "numeric(5,-3)"


def _kinds(namer: gs.TypeNamer, server_version: int = 150000) -> dict[str, st.SearchStrategy]:
    """Each base type the tap renders on this server version, as (SQL type, DDL it needs, texts of its values)."""
    fixed = {
        "smallint": gs._int_texts(16),
        "integer": gs._int_texts(32),
        "bigint": gs._int_texts(64),
        "oid": st.integers(0, 2**32 - 1).map(str),
        "numeric": gs._numeric_texts(None, 0),
        "numeric(38,10)": gs._numeric_texts(38, 10),
        "real": gs._float_texts(32),
        "double precision": gs._float_texts(64),
        "jsonb": gs._json_texts(nul=False),
        NEGATIVE_SCALE: gs._numeric_texts(5, -3),
        "boolean": st.sampled_from(["true", "false"]),
        "character(4)": gs._chars_at_most(4),
        "character varying": _TEXT,
        "text": st.one_of(_TEXT, st.text(gs._SAFE_TEXT, max_size=200)),
        "citext": _TEXT,
        "name": gs._bytes_at_most(63),
        "uuid": st.uuids().map(str),
        "inet": gs._inet(network=False),
        "cidr": gs._inet(network=True),
        "macaddr": gs._mac(6),
        "macaddr8": gs._mac(8),
        "tsvector": gs._TSVECTOR,
        "tsquery": gs._TSQUERY,
        "interval": gs._INTERVALS,
        "interval second(2)": gs._INTERVALS,
        "date": gs._DATES,
        "timestamp(3) without time zone": gs._timestamp_texts(),
        "timestamp without time zone": gs._timestamp_texts(),
        "timestamp with time zone": gs._timestamptz_texts(),
        "timestamp(0) with time zone": gs._timestamptz_texts(),
    }
    if server_version < 150000:
        del fixed[NEGATIVE_SCALE]
    kinds = {name: st.just((name, (), texts)) for name, texts in fixed.items()}
    labels = st.lists(st.one_of(st.sampled_from(gs.ODD_STRINGS), gs.identifiers()).filter(gs._label_fits),
                      min_size=1, max_size=5, unique=True)  # fmt: skip
    kinds["enum"] = labels.map(lambda labels: gs.enum_type(namer.fresh("mood"), labels)).map(
        lambda base: (base.sql, base.ddl, base.texts)
    )
    return kinds


KINDS = list(_kinds(gs.TypeNamer("x", "t")))


@pytest.fixture(autouse=True)
def bounded_shrinking():
    """Cap the time spent shrinking a failure in the bounded run."""
    with shrinking_capped(10):
        yield


WAL2JSON_SLOT = "local_render_wal2json"


@pytest.fixture(scope="module")
def sessions(db, server):
    """The module's database with citext, a session of the tap's own (its pinned settings), and
    whether a wal2json slot (WAL2JSON_SLOT) reads the changes made in it."""
    db.execute("CREATE EXTENSION IF NOT EXISTS citext")
    if server.has_wal2json:
        db.execute(f"SELECT pg_create_logical_replication_slot('{WAL2JSON_SLOT}', 'wal2json')")
    tap = connect(parse_config(db.config))
    yield db, tap, server.has_wal2json
    tap.close()
    if server.has_wal2json:
        db.execute(f"SELECT pg_drop_replication_slot('{WAL2JSON_SLOT}')")


def pgoutput_insert(texts: list[str | None]) -> bytes:
    """pgoutput's insert message of a row of these texts (protocol 1: relation id, `N`, the tuple)."""
    tuple_data = b"".join(
        b"n" if text is None else b"t" + struct.pack("!I", len(text.encode())) + text.encode() for text in texts
    )
    return b"I" + struct.pack("!I", 16384) + b"N" + struct.pack("!H", len(texts)) + tuple_data


def wal2json_inserts(tap, schema: str) -> list[Change]:
    """Each insert into `schema`.t since the last call, as the WAL pass decodes wal2json's message of it
    (written in the tap's session: its pinned settings print the dates)."""
    options = ["format-version", "2", "include-xids", "true", "include-timestamp", "true", "include-lsn", "true"]
    options += ["include-types", "false", "add-tables", f"{schema}.t"]  # as the WAL pass asks
    with tap.cursor() as cur:
        cur.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, VARIADIC %s)", (WAL2JSON_SLOT, options)
        )
        messages = [row[0].encode() for row in cur.fetchall()]
    tap.commit()
    decoder = Wal2jsonDecoder()
    return [change for change in map(decoder.decode, messages) if change.action == "I"]


@st.composite
def local_tables(draw, schema: str, kind: str, server_version: int):
    """(DDL, column names, rows of SQL values) of a table whose first column is of `kind`, maybe under a domain."""
    namer = gs.TypeNamer(schema, "t")
    kinds = _kinds(namer, server_version)
    others = st.sampled_from(list(kinds)).flatmap(lambda other: kinds[other])
    columns = [draw(kinds[kind]), *draw(st.lists(others, max_size=2))]
    names = draw(st.lists(gs.identifiers(), min_size=len(columns), max_size=len(columns), unique=True))
    ddl, definitions, values = [], [], []
    for name, (type_sql, type_ddl, texts) in zip(names, columns, strict=True):
        ddl.extend(type_ddl)
        if draw(st.booleans()):
            domain = namer.fresh(draw(gs.type_names()))
            ddl.append(gs.domain_ddl(domain, type_sql))
            type_sql = domain
        definitions.append(f"{ident(name)} {type_sql}")
        values.append(st.one_of(texts.map(lambda text, t=type_sql: f"{string(text)}::{t}"), st.just("NULL")))
    ddl.append(f"CREATE TABLE {ident(schema)}.t ({', '.join(definitions)})")
    rows = draw(st.lists(st.tuples(*values), min_size=1, max_size=12))
    return ddl, names, rows


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(EXAMPLES, "local_render")
@given(data=st.data(), lsn=st.integers(0, 2**63 - 1))
def test_the_tap_renders_each_local_family_as_the_server_does(sessions, kind, data, lsn):
    db, tap, wal2json = sessions
    if kind not in _kinds(gs.TypeNamer("x", "t"), tap.server_version):
        pytest.skip(f"{kind} is not a type of PostgreSQL {tap.server_version}")
    schema = f"lr{next(_schemas)}"
    db.execute(f"CREATE SCHEMA {schema}")
    try:
        ddl, names, rows = data.draw(local_tables(schema, kind, tap.server_version))
        for statement in ddl:
            note(statement)
            db.execute(statement)
        inserted = 0
        for row in rows:
            try:
                db.execute(f"INSERT INTO {schema}.t VALUES ({', '.join(row)})")
                inserted += 1
            except psycopg2.DataError:  # a value this server version does not take (numeric Infinity before 14)
                pass
        assume(inserted)
        (table,) = describe_tables(tap, tables=[(schema, "t")])
        tap.rollback()
        columns = table.columns
        through_wal2json = wal2json_inserts(tap, schema) if wal2json else []
        for debug_lsn in (False, True):
            rows_here = LocalRows.of(columns, tuple(names), LocalOptions(True, debug_lsn))
            assert rows_here is not None, [column.type for column in columns]
            wal2json_here = LocalRows.of(columns, tuple(names), LocalOptions(True, debug_lsn, plugin="wal2json"))
            assert wal2json_here is not None, [column.type for column in columns]
            extra = sql.SQL("NULL AS {}").format(sql.Identifier(DELETED_AT))
            if debug_lsn:
                extra += sql.SQL(", ({}::pg_lsn - '0/0')::bigint AS {}").format(
                    sql.Literal(int_to_lsn(lsn)), sql.Identifier(LSN)
                )
            query = sql.SQL(
                "SELECT ARRAY[{}], (SELECT row_to_json(r.*)::text FROM (SELECT {}, {}) AS r) FROM {} AS t "
                "ORDER BY t.ctid"  # the order of the inserts: the table has no other change
            ).format(
                sql.SQL(", ").join(
                    sql.SQL("CASE WHEN t.{0} IS NOT NULL THEN format('%s', t.{0}) END").format(sql.Identifier(name))
                    for name in names
                ),
                rendered_columns(columns, relation="t"),
                extra,
                sql.Identifier(schema, "t"),
            )
            with tap.cursor() as cur:
                cur.execute(query)
                server_rows = cur.fetchall()
            tap.rollback()
            assert rows_here.reads_tuples
            for texts, rendered in server_rows:
                note(f"texts {texts!r}")
                assert rows_here.record(texts, int_to_lsn(lsn)).decode() == rendered
                # the WAL pass's fast path reads the same texts as pgoutput's bytes
                assert rows_here.tuple_record(pgoutput_insert(texts), int_to_lsn(lsn)).decode() == rendered
            if wal2json:
                assert len(through_wal2json) == len(server_rows)
                for change, (_, rendered) in zip(through_wal2json, server_rows, strict=True):
                    note(f"wal2json {change.payload!r}")
                    values = wal2json_values(change, wal2json_here.number_texts)
                    assert values is not None
                    assert wal2json_here.record(values, int_to_lsn(lsn)).decode() == rendered
    finally:
        db.execute(f"DROP SCHEMA {schema} CASCADE")

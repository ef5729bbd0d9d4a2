"""Columns named like the tap's own aliases, or like SQL keywords, sync under every method."""

from __future__ import annotations

import pytest
from conftest import records_of, select_all, states_of

# Every alias and relation name the tap's queries use, and words that would break unquoted SQL.
NAMES = [
    *["r", "source", "change", "stored", "typed", "e", "v", "n", "entry", "select", "Order", "a b", 'q"uote'],
    # psycopg2 %-formats a query run with parameters: none of the tap's composed queries may be
    *["a%", "%s", "%(x)s"],
]
COLUMNS = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}" int' for name in NAMES)


@pytest.fixture(scope="module")
def table(db):
    db.execute(f'CREATE TABLE captured (id int PRIMARY KEY, {COLUMNS}, "int_arr" int[])')
    values = ", ".join(str(index) for index in range(len(NAMES)))
    db.execute(f"INSERT INTO captured SELECT g, {values}, ARRAY[g, NULL] FROM generate_series(1, 3) g")
    return db.discover()


@pytest.fixture(scope="module")
def slot(db):
    return db.create_slot()


def expected_row(row_id: int) -> dict:
    return {"id": row_id, **{name: index for index, name in enumerate(NAMES)}, "int_arr": [row_id, None]}


def test_full_table_emits_columns_named_like_its_aliases(db, table):
    records = records_of(db.sync(select_all(table)))
    assert records == [expected_row(1), expected_row(2), expected_row(3)]


def test_incremental_on_a_key_named_r(db, table):
    messages = db.sync(select_all(table, method="INCREMENTAL", replication_key="r"))
    assert records_of(messages) == [expected_row(1), expected_row(2), expected_row(3)]
    assert states_of(messages)[-1]["bookmarks"]["public-captured"]["replication_key_value"] == NAMES.index("r")


def test_log_based_changes_of_columns_named_like_its_aliases(db, table, slot):
    catalog = select_all(table, method="LOG_BASED")
    state = states_of(db.sync(catalog))[-1]
    db.execute(
        "INSERT INTO captured SELECT 4, "
        + ", ".join(f'"{n}"' for n in ["r"] * len(NAMES))
        + ", NULL FROM captured WHERE id = 1"
    )
    db.execute('UPDATE captured SET "r" = 100, "stored" = 200 WHERE id = 2')
    db.execute("DELETE FROM captured WHERE id = 3")
    records = records_of(db.sync(catalog, state=state))
    assert [(r["id"], r["r"], r["stored"], r["_sdc_deleted_at"] is None) for r in records] == [
        (4, 0, 0, True),
        (2, 100, 200, True),
        (3, None, None, False),
    ]
    assert records[1] == {**expected_row(2), "r": 100, "stored": 200, "_sdc_deleted_at": None}


@pytest.mark.parametrize("table_name", ["%s", "café", "名前", "t\tab", "new\nline, x.y*\\z"])
def test_log_based_on_tables_named_with_percent_or_unicode(db, table, slot, table_name):
    # wal2json's add-tables must name the table as the server spells it, or its changes are dropped
    quoted = '"' + table_name + '"'
    db.execute(f"CREATE TABLE {quoted} (id int PRIMARY KEY, v text)")
    db.execute(f"INSERT INTO {quoted} VALUES (1, 'copied')")
    catalog = select_all(db.discover(), method="LOG_BASED", only={f"public-{table_name}"})
    state = states_of(db.sync(catalog))[-1]
    db.execute(f"INSERT INTO {quoted} VALUES (2, 'streamed')")
    assert [r["v"] for r in records_of(db.sync(catalog, state=state))] == ["streamed"]


def test_full_table_on_an_hstore_key_copies_in_one_pass(db):
    # hstore's btree has no ordinary < and >, so its keys cannot bound key ranges
    db.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    db.execute("CREATE TABLE keyed_by_hstore (h hstore PRIMARY KEY)")
    db.execute("INSERT INTO keyed_by_hstore VALUES ('a=>1'), ('b=>2'), ('c=>3')")
    catalog = select_all(db.discover(), only={"public-keyed_by_hstore"})
    records = records_of(db.sync(catalog, config=dict(db.config, itersize=1)))
    assert sorted(r["h"]["a"] if "a" in r["h"] else r["h"].popitem()[1] for r in records) == ["1", "2", "3"]


# Type names are server-provided text: composed as identifiers, a brace or a quote in one is only a
# character of the name, never a placeholder of the tap's SQL templates.
HOSTILE_TYPES = '''
CREATE SCHEMA "s{v}%s";
CREATE TYPE "s{v}%s"."x{text}y" AS ENUM ('a{v}', 'b%s', 'c''q');
CREATE DOMAIN "s{v}%s"."e{v}" AS "s{v}%s"."x{text}y" NOT NULL;
CREATE DOMAIN "d{0}""" AS text CHECK (VALUE <> '');
CREATE TABLE "s{v}%s"."t{v}" (k "s{v}%s"."e{v}" PRIMARY KEY, d "d{0}""", ds "d{0}"""[], e "s{v}%s"."x{text}y"[]);
INSERT INTO "s{v}%s"."t{v}" VALUES
    ('a{v}', '{x}', ARRAY['%(x)s'], ARRAY['b%s']::"s{v}%s"."x{text}y"[]),
    ('b%s', '10% off', NULL, NULL),
    ('c''q', '50%% done', ARRAY[NULL, 'q'], ARRAY['c''q']::"s{v}%s"."x{text}y"[]);
'''
HOSTILE_ROWS = [
    {"k": "a{v}", "d": "{x}", "ds": ["%(x)s"], "e": ["b%s"]},
    {"k": "b%s", "d": "10% off", "ds": None, "e": None},
    {"k": "c'q", "d": "50%% done", "ds": [None, "q"], "e": ["c'q"]},
]


@pytest.fixture(scope="module")
def hostile(db):
    db.execute(HOSTILE_TYPES)
    return db.discover()


def test_full_table_key_ranges_over_types_named_with_braces(db, hostile):
    catalog = select_all(hostile, only={"s{v}%s-t{v}"})
    records = records_of(db.sync(catalog, config=dict(db.config, itersize=1)))
    assert records == HOSTILE_ROWS


@pytest.mark.parametrize("key", ["k", "d"])
def test_incremental_bookmarks_with_percent_and_braces_resume(db, hostile, key):
    catalog = select_all(hostile, method="INCREMENTAL", replication_key=key, only={"s{v}%s-t{v}"})
    records = records_of(db.sync(catalog, config=dict(db.config, itersize=1)))
    assert sorted(records, key=lambda row: row["k"]) == HOSTILE_ROWS
    for row in HOSTILE_ROWS:  # a rerun from a bookmark holding % or braces takes that row again, unchanged
        state = {"bookmarks": {"s{v}%s-t{v}": {"replication_key": key, "replication_key_value": row[key]}}}
        messages = db.sync(catalog, state=state)
        assert row in records_of(messages)
        assert states_of(messages)[-1]["bookmarks"]["s{v}%s-t{v}"]["replication_key_value"] is not None


def test_log_based_changes_of_types_named_with_braces(db, hostile, slot):
    catalog = select_all(hostile, method="LOG_BASED", only={"s{v}%s-t{v}"})
    state = states_of(db.sync(catalog))[-1]
    db.execute("""UPDATE "s{v}%s"."t{v}" SET d = '{y}' WHERE d = '{x}'""")
    db.execute("""DELETE FROM "s{v}%s"."t{v}" WHERE d = '10% off'""")
    records = records_of(db.sync(catalog, state=state))
    assert [(r["k"], r["d"], r["_sdc_deleted_at"] is None) for r in records] == [
        ("a{v}", "{y}", True),
        ("b%s", None, False),
    ]


def test_an_error_naming_a_table_with_a_line_break_is_still_one_line(db):
    db.execute('CREATE TABLE "two\nlines" (id int PRIMARY KEY)')
    catalog = select_all(db.discover(), only={"public-two\nlines"})
    db.execute('DROP TABLE "two\nlines"')
    messages, stderr, code = db.try_sync(catalog)
    assert code == 1
    assert stderr[-1] == (
        'tap-postgres: error: table "public"."two\\nlines" of stream public-two\\nlines no longer exists: '
        "rerun --discover and update the catalog"
    )

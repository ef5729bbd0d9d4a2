"""Columns named like the tap's own aliases, or like SQL keywords, sync under every method."""

from __future__ import annotations

import pytest
from conftest import records_of, select_all, states_of

# Every alias and relation name the tap's queries use, and words that would break unquoted SQL.
NAMES = ["r", "source", "change", "stored", "typed", "e", "v", "n", "entry", "select", "Order", "a b", 'q"uote']
COLUMNS = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}" int' for name in NAMES)


@pytest.fixture(scope="module")
def table(db):
    db.execute(f'CREATE TABLE captured (id int PRIMARY KEY, {COLUMNS}, "int_arr" int[])')
    values = ", ".join(str(index) for index in range(len(NAMES)))
    db.execute(f"INSERT INTO captured SELECT g, {values}, ARRAY[g, NULL] FROM generate_series(1, 3) g")
    return db.discover()


def expected_row(row_id: int) -> dict:
    return {"id": row_id, **{name: index for index, name in enumerate(NAMES)}, "int_arr": [row_id, None]}


def test_full_table_emits_columns_named_like_its_aliases(db, table):
    records = records_of(db.sync(select_all(table)))
    assert records == [expected_row(1), expected_row(2), expected_row(3)]


def test_incremental_on_a_key_named_r(db, table):
    messages = db.sync(select_all(table, method="INCREMENTAL", replication_key="r"))
    assert records_of(messages) == [expected_row(1), expected_row(2), expected_row(3)]
    assert states_of(messages)[-1]["bookmarks"]["public-captured"]["replication_key_value"] == NAMES.index("r")


def test_log_based_changes_of_columns_named_like_its_aliases(db, table):
    db.create_slot()
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

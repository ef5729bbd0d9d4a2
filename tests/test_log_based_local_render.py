"""LOG_BASED whole rows rendered in the tap (sync/local_render.py) are the server's bytes, in the order of the WAL,
through both plugins: the same changes read with render_changes_in_tap on and off give the same records.

(tests/test_local_render.py checks each family's values against the server's render, value by value.)
"""

from __future__ import annotations

import pytest
from conftest import select_all, states_of


@pytest.fixture(params=["wal2json", "pgoutput"])
def plugin(db, server, request):
    """Each plugin's slot for the module's database: wal2json's made here, pgoutput's by the tap itself."""
    if request.param == "wal2json" and not server.has_wal2json:
        pytest.skip("needs wal2json, which only Debian's 15 here has (make test runs it there)")
    db.plugin = request.param
    if request.param == "wal2json":
        db.create_slot()
    try:
        yield request.param
    finally:
        db.drop_slots()
        db.execute(f'DROP PUBLICATION IF EXISTS "pipelinewise_{db.name}"')
        db.plugin = db.default_plugin


def records(db, catalog: dict, state: dict, render_in_tap: bool) -> list[str]:
    """The RECORD lines of a LOG_BASED run from `state`, without time_extracted, rendered in the tap or by the server."""
    lines, _, _ = db.run_tap(
        "--catalog",
        str(db.write_json("catalog.json", catalog)),
        "--state",
        str(db.write_json("state.json", state)),
        config=dict(db.config, render_changes_in_tap=render_in_tap),
    )
    return [line.split(',"time_extracted"')[0] for line in lines if line.startswith('{"type":"RECORD"')]


def test_changes_rendered_in_the_tap_are_the_servers_bytes_in_the_order_of_the_wal(db, plugin):
    """Whole rows the tap renders, between deletes and key changes the server renders, keep their order and bytes."""
    db.execute("CREATE DOMAIN cents AS numeric(12, 2); CREATE DOMAIN flag AS boolean; CREATE DOMAIN small AS int2")
    db.execute(
        "CREATE TABLE mixed (id int PRIMARY KEY, n numeric, t text, ts timestamptz, d date, b boolean, u uuid, "
        "price numeric(12, 2), amount cents, f flag, s small, big bigint, o oid)"
    )
    try:
        catalog = select_all(db.discover(), method="LOG_BASED", only={"public-mixed"})
        state = states_of(db.sync(catalog))[-1]
        db.execute(
            "INSERT INTO mixed VALUES (1, 1.50, E'a\"\\\\\\n\\x01é', '2024-02-29 12:00:00.5+02', '0044-03-15 BC', true, "
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 10.10, 0.50, false, -32768, -9223372036854775808, 4294967295), "
            "(2, 'NaN', NULL, 'infinity', '10000-01-01', false, NULL, -9999999999.99, 'NaN', true, 7, 1, 0);"
            "DELETE FROM mixed WHERE id = 1; UPDATE mixed SET id = 3 WHERE id = 2; UPDATE mixed SET n = -0.001;"
            "INSERT INTO mixed VALUES (4, 12345678901234567890.123, '', '-infinity', 'infinity', NULL, NULL, "
            "0, 1e9, NULL, NULL, NULL, NULL)"
        )

        here, server = records(db, catalog, state, render_in_tap=True), records(db, catalog, state, render_in_tap=False)
        assert here == server
        ids = [int(line.split('"record":{"id":')[1].split(",")[0]) for line in here]
        assert ids == [1, 2, 1, 2, 3, 3, 4]  # inserts, the delete, the key change (delete, row), the update, insert
        assert '"price":10.10,"amount":0.50' in here[0] and '"price":-9999999999.99,"amount":null' in here[1]
    finally:
        db.execute("DROP TABLE mixed; DROP DOMAIN cents, flag, small")


def test_floats_jsonb_intervals_and_addresses_rendered_in_the_tap_are_the_servers_bytes(db, plugin):
    """The families added to the tap's renderer, from both plugins' texts: -0, NaN, exponents, jsonb of any shape."""
    db.execute("CREATE DOMAIN ratio AS double precision")
    db.execute(
        "CREATE TABLE measured (id int PRIMARY KEY, r real, x double precision, q ratio, j jsonb, i interval, "
        "a inet, m macaddr, v tsvector)"
    )
    try:
        catalog = select_all(db.discover(), method="LOG_BASED", only={"public-measured"})
        state = states_of(db.sync(catalog))[-1]
        db.execute(
            "INSERT INTO measured VALUES (1, '-0', '1e+300', '-0', '{\"b\": [1, \"x\\ny\"], \"a\": null}', "
            "'1 year 2 mons 3 days 04:05:06.5', '10.0.0.1/8', '08:00:2b:01:02:03', 'fat:2 cat:1'), "
            "(2, 'NaN', '-Infinity', 'NaN', '\"%s\"', '-1 day', '::1', NULL, ''), "
            "(3, '3.4028235e+38', '5e-324', '0.1', '12.50', NULL, NULL, NULL, NULL);"
            "UPDATE measured SET x = 1.5e-07 WHERE id = 2; DELETE FROM measured WHERE id = 3"
        )

        here, server = records(db, catalog, state, render_in_tap=True), records(db, catalog, state, render_in_tap=False)
        assert here == server
        assert '"r":0,"x":1e+300,"q":0,"j":{"a": null, "b": [1, "x\\ny"]},"i":"P1Y2M3DT4H5M6.5S"' in here[0]
        assert '"r":null,"x":null,"q":null,"j":"%s"' in here[1]
        assert '"x":1.5e-07' in here[3]
    finally:
        db.execute("DROP TABLE measured; DROP DOMAIN ratio")

"""Publications the tap did not make are read, never altered: a real logical-replication subscriber
on a second cluster keeps its publication, filters and data; another role's publication, another
pipeline's, a FOR TABLES IN SCHEMA one are each left as they are.
"""

from __future__ import annotations

import time

import pytest
from conftest import private_cluster, records_of, states_of
from test_pgoutput import log_based

from tap_postgres.publication import marker_statement

SLOT_OF = "pipelinewise_{}"


@pytest.fixture(scope="module")
def tables(db):
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, ssn text, archived bool DEFAULT false)")
    db.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text)")
    db.execute("CREATE TABLE shop.notes (id int PRIMARY KEY, body text)")
    db.execute("INSERT INTO people VALUES (1, 'ann', '111', false), (2, 'bob', '222', true)")
    db.execute("INSERT INTO shop.orders VALUES (1, 'pen')")
    return db.discover()


def definition(db, name: str) -> list[tuple]:
    """Everything the catalog says about a publication: its row, comment and owner, its tables with their
    row filters and column lists, its schemas, and what pg_publication_tables resolves it to."""
    return db.query(
        "SELECT p.pubname, p.pubowner::regrole::text, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, "
        "p.pubtruncate, p.pubviaroot, obj_description(p.oid, 'pg_publication'), "
        "(SELECT json_agg(json_build_array(r.oid, r.prrelid::regclass::text, pg_get_expr(r.prqual, r.prrelid), "
        "r.prattrs::text) ORDER BY r.oid) FROM pg_publication_rel r WHERE r.prpubid = p.oid)::text, "
        "(SELECT json_agg(pn.pnnspid::regnamespace::text) FROM pg_publication_namespace pn "
        "WHERE pn.pnpubid = p.oid)::text, "
        "(SELECT json_agg(json_build_array(schemaname, tablename, attnames, rowfilter) ORDER BY 1, 2) "
        "FROM pg_publication_tables t WHERE t.pubname = p.pubname)::text "
        "FROM pg_publication p WHERE p.pubname = %s",
        (name,),
    )


@pytest.fixture
def clean(db):
    """Drop the slots and publications a test made."""
    yield
    db.drop_slots()
    for (name,) in db.query("SELECT pubname FROM pg_publication"):
        db.execute(f'DROP PUBLICATION "{name}"')


@pytest.fixture(scope="module")
def subscriber():
    """A second cluster, where a real subscription reads the test database."""
    with private_cluster("tap-postgres-subscriber-") as cluster:
        yield cluster


def wait_for(sub_conn, query: str, expected, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        with sub_conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
        if rows == expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


PEOPLE = "SELECT id, name, ssn, archived FROM people ORDER BY id"


def test_a_real_subscribers_publication_its_filters_and_its_data_are_unchanged(db, tables, subscriber, clean):
    db.execute(
        "CREATE PUBLICATION subpub FOR TABLE people (id, name, archived) WHERE (NOT archived), shop.orders "
        "WITH (publish = 'insert, update')"
    )
    sub = subscriber.connect()
    with sub.cursor() as cur:
        cur.execute("CREATE TABLE people (id int PRIMARY KEY, name text, ssn text, archived bool)")
        cur.execute("CREATE SCHEMA shop")
        cur.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text)")
        cur.execute(
            f"CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port={db.server.port} user={db.server.user} "
            f"password={db.server.password} dbname={db.name}' PUBLICATION subpub"
        )
    try:
        assert wait_for(sub, PEOPLE, [(1, "ann", None, False)]) == [(1, "ann", None, False)]
        before = definition(db, "subpub")
        config = dict(db.config, output_plugin="pgoutput", create_replication_slot=True, publication_name="subpub")
        for stream, refusal in [
            (
                "public-people",
                'it has a row filter on "public"."people", so the records would miss the rows it filters out',
            ),
            (
                "shop-orders",
                "it does not publish delete, so the target would miss or keep rows: its owner postgres "
                "can run ALTER PUBLICATION \"subpub\" SET (publish = 'insert, update, delete')",
            ),
        ]:
            messages, stderr, code = db.try_sync(log_based(tables, stream), config=config)
            assert code == 1 and not records_of(messages)
            assert stderr[-1].startswith(
                'tap-postgres: error: publication "subpub" is not one the tap made (owner postgres), so the tap '
                "reads it and never changes it: " + refusal
            ), stderr[-1]
        assert definition(db, "subpub") == before
        # the subscriber still gets exactly what its publication says: no deletes, no ssn, no archived rows
        db.execute("INSERT INTO people VALUES (3, 'cy', '333', false), (4, 'di', '444', true)")
        db.execute("DELETE FROM people WHERE id = 1")
        db.execute("INSERT INTO shop.orders VALUES (2, 'ink')")
        expected = [(1, "ann", None, False), (3, "cy", None, False)]
        assert wait_for(sub, PEOPLE, expected) == expected
        assert wait_for(sub, "SELECT * FROM shop.orders ORDER BY id", [(1, "pen"), (2, "ink")]) == [
            (1, "pen"),
            (2, "ink"),
        ]
    finally:
        with sub.cursor() as cur:
            cur.execute("DROP SUBSCRIPTION sub")
        sub.close()
        db.execute("DELETE FROM people WHERE id > 2")
        db.execute("INSERT INTO people VALUES (1, 'ann', '111', false) ON CONFLICT DO NOTHING")
        db.execute("DELETE FROM shop.orders WHERE id > 1")


def test_another_roles_publication_is_untouched_even_by_a_superuser(db, tables, clean):
    slot = SLOT_OF.format(db.name)
    db.execute("DROP ROLE IF EXISTS alice")
    db.execute("CREATE ROLE alice")
    try:
        # named like the slot and even marked as the tap marks its own, but another role owns it
        db.execute(f'CREATE PUBLICATION "{slot}" FOR TABLE people')
        db.execute(marker_statement(slot, slot, None))
        db.execute(f'ALTER PUBLICATION "{slot}" OWNER TO alice')
        before = definition(db, slot)
        config = dict(db.config, output_plugin="pgoutput", create_replication_slot=True)
        messages, stderr, code = db.try_sync(log_based(tables, "public-people", "shop-orders"), config=config)
        assert code == 1 and not records_of(messages)
        assert stderr[-1] == (
            f'tap-postgres: error: publication "{slot}" is not one the tap made (owner alice), so the tap reads it '
            f'and never changes it: it lacks "shop"."orders": its owner alice can run ALTER PUBLICATION "{slot}" '
            'ADD TABLE "shop"."orders"'
        )
        assert definition(db, slot) == before
        assert not db.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    finally:
        db.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
        db.execute("DROP ROLE alice")


def test_another_pipelines_publication_is_refused_with_its_marker(db, tables, clean):
    slot = SLOT_OF.format(db.name)
    db.execute(f'CREATE PUBLICATION "{slot}" FOR TABLE shop.notes')
    db.execute(marker_statement(slot, f"{slot}_billing", "billing"))
    before = definition(db, slot)
    config = dict(db.config, output_plugin="pgoutput", create_replication_slot=True)
    messages, stderr, code = db.try_sync(log_based(tables, "public-people"), config=config)
    assert code == 1 and not records_of(messages)
    assert stderr[-1].startswith(
        f'tap-postgres: error: publication "{slot}" belongs to another pipeline (its comment names slot '
        f'"{slot}_billing" and tap_id "billing"), and this one reads slot "{slot}" with tap_id null'
    )
    assert definition(db, slot) == before


def test_a_schema_publication_is_read_as_it_is_and_used(db, tables, clean):
    db.execute("CREATE PUBLICATION shop_pub FOR TABLES IN SCHEMA shop")
    before = definition(db, "shop_pub")
    config = dict(db.config, output_plugin="pgoutput", create_replication_slot=True, publication_name="shop_pub")
    catalog = log_based(tables, "shop-orders")
    state = states_of(db.sync(catalog, config=config))[-1]
    db.execute("INSERT INTO shop.orders VALUES (3, 'cup')")
    db.execute("INSERT INTO shop.notes VALUES (1, 'not selected')")
    db.execute("DELETE FROM shop.orders WHERE id = 3")
    records = records_of(db.sync(catalog, state=state, config=config))
    assert [(r["id"], r["_sdc_deleted_at"] is not None) for r in records] == [(3, False), (3, True)]
    assert definition(db, "shop_pub") == before

"""Runs that must not shrink a publication or take a slot: a partial catalog, a second pipeline and a
refused run between writes, then a full run that emits every change, through pgoutput and wal2json.
"""

from __future__ import annotations

import copy

import pytest
from conftest import records_of, select_all, states_of


@pytest.fixture(scope="module")
def tables(db):
    db.execute("CREATE TABLE pets (id int PRIMARY KEY, name text)")
    db.execute("CREATE TABLE toys (id int PRIMARY KEY, name text)")
    db.execute("CREATE TABLE logs (id int PRIMARY KEY)")
    return db.discover()


@pytest.fixture(params=["pgoutput", "wal2json"])
def plugin(request, db, tables):
    db.plugin = request.param
    try:
        yield request.param
    finally:
        db.drop_slots()
        for (name,) in db.query("SELECT pubname FROM pg_publication"):
            db.execute(f'DROP PUBLICATION "{name}"')
        db.execute("TRUNCATE pets, toys")
        db.plugin = "wal2json"


def log_based(catalog: dict, *stream_ids: str) -> dict:
    return select_all(copy.deepcopy(catalog), "LOG_BASED", only=set(stream_ids))


def names(messages: list[dict], stream: str) -> list[str]:
    return [record["name"] for record in records_of(messages, stream)]


def publications(db) -> list[tuple]:
    return db.query(
        "SELECT pubname, obj_description(p.oid, 'pg_publication'), "
        "(SELECT array_agg(prrelid::regclass::text ORDER BY prrelid) FROM pg_publication_rel WHERE prpubid = p.oid) "
        "FROM pg_publication p ORDER BY 1"
    )


def test_a_partial_catalog_a_second_pipeline_and_a_refused_run_lose_no_change(db, tables, plugin):
    config = dict(db.config, create_replication_slot=True, output_plugin=plugin)
    both = log_based(tables, "public-pets", "public-toys")
    state = states_of(db.sync(both, config=config))[-1]
    slot = f"pipelinewise_{db.name}"

    db.execute("INSERT INTO pets VALUES (1, 'a'); INSERT INTO toys VALUES (1, 'b')")
    # a partial catalog: toys keeps its place in the publication and its changes wait in the slot
    partial = db.sync(log_based(tables, "public-pets"), config=config, state=state)
    assert names(partial, "public-pets") == ["a"]
    state = states_of(partial)[-1]
    before = publications(db)

    db.execute("INSERT INTO pets VALUES (2, 'c'); INSERT INTO toys VALUES (2, 'd')")
    # a second pipeline (its own tap_id, no state) finds the first's slot and refuses to take it
    second = dict(config, tap_id="second")
    messages, stderr, code = db.try_sync(log_based(tables, "public-toys"), config=second)
    assert code == 1 and f'replication slot "{slot}" exists, but this pipeline' in stderr[-1], stderr
    assert not records_of(messages) and publications(db) == before

    db.execute("INSERT INTO toys VALUES (3, 'e')")
    # a run refused for another stream's bookmark touches neither the publication nor the slot
    refused = log_based(tables, "public-pets", "public-toys")
    refused["streams"] += select_all(copy.deepcopy(tables), "INCREMENTAL", "id", only={"public-logs"})["streams"]
    bad = copy.deepcopy(state)
    bad["bookmarks"]["public-logs"] = {"replication_key": "id", "replication_key_value": "x"}
    messages, stderr, code = db.try_sync(refused, config=config, state=bad)
    assert code == 1 and not records_of(messages), stderr
    assert publications(db) == before

    db.execute("INSERT INTO pets VALUES (3, 'f'); INSERT INTO toys VALUES (4, 'g')")
    full = db.sync(both, config=config, state=state)
    assert names(full, "public-pets") == ["c", "f"]
    assert names(full, "public-toys") == ["b", "d", "e", "g"]

    # the second pipeline, given a slot of its own as the line says, reads only that one
    db.execute("INSERT INTO toys VALUES (5, 'h')")
    own = f"pipelinewise_{db.name}_second"
    if plugin == "pgoutput":
        db.execute(f'CREATE PUBLICATION "{own}" FOR TABLE toys')
    db.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (own, plugin))
    messages = db.sync(log_based(tables, "public-toys"), config=second)
    assert sorted(names(messages, "public-toys")) == ["b", "d", "e", "g", "h"]  # its initial copy
    assert states_of(messages)[-1]["bookmarks"]["public-toys"]["origin"]["slot"] == own
    # and the first pipeline goes on from its own slot, missing nothing
    db.execute("INSERT INTO toys VALUES (6, 'i')")
    assert names(db.sync(both, config=config, state=states_of(full)[-1]), "public-toys") == ["h", "i"]

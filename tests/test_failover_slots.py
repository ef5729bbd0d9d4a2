"""slot_failover: on PostgreSQL 17+ the tap's slot is a failover slot; below 17 one line says why not."""

from __future__ import annotations

import copy

import pytest
from conftest import records_of, select_all


@pytest.fixture
def catalog(db):
    db.plugin = "pgoutput"  # every supported server has it
    db.execute("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY); TRUNCATE kept; INSERT INTO kept VALUES (1)")
    yield select_all(copy.deepcopy(db.discover()), method="LOG_BASED", only={"public-kept"})
    db.drop_slots()
    for (name,) in db.query("SELECT pubname FROM pg_publication"):
        db.execute(f'DROP PUBLICATION "{name}"')


def slot_failover(db) -> bool:
    return db.query("SELECT failover FROM pg_replication_slots WHERE database = %s", (db.name,))[0][0]


def test_a_slot_the_tap_creates_is_a_failover_slot(db, catalog):
    if db.server.version_num < 170000:
        pytest.skip("failover slots are PostgreSQL 17's (make test-versions runs this on 17 and 18)")
    messages, stderr, code = db.try_sync(catalog, config={**db.config, "slot_failover": True})
    assert code == 0, stderr
    assert [r["id"] for r in records_of(messages)] == [1]
    assert slot_failover(db) is True
    health = [line for line in stderr if "slot_health when=end" in line]
    assert health and "failover=true synced=false" in health[0]


def test_an_existing_slot_becomes_a_failover_slot(db, catalog):
    if db.server.version_num < 170000:
        pytest.skip("failover slots are PostgreSQL 17's (make test-versions runs this on 17 and 18)")
    db.create_slot()
    assert slot_failover(db) is False
    _, stderr, code = db.try_sync(catalog, config={**db.config, "slot_failover": True})
    assert code == 0, stderr
    assert slot_failover(db) is True


def test_slot_failover_below_17_is_one_line(db, catalog):
    if db.server.version_num >= 170000:
        pytest.skip("a server below 17 refuses it (make test runs this on 15)")
    messages, stderr, code = db.try_sync(catalog, config={**db.config, "slot_failover": True})
    assert code == 1 and len(stderr) == 1, stderr
    assert "slot_failover needs PostgreSQL 17 or later" in stderr[0]
    assert not records_of(messages)
    assert not db.query("SELECT 1 FROM pg_replication_slots WHERE database = %s", (db.name,))

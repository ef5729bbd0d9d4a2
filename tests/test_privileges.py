"""A least-privilege role: what it cannot read is left out of discovery with a warning, and a sync
that needs a privilege the role lacks stops before any copy with one line naming the GRANT to run."""

from __future__ import annotations

import json

import pytest
from conftest import records_of, select_all

ROLE, ROLE_PASSWORD = "tap_least", "least-secret"


@pytest.fixture(scope="module")
def role(db):
    """A role with SELECT on every table and USAGE on schema `public` only, without REPLICATION."""
    db.execute("CREATE TABLE open_rows (id int PRIMARY KEY)")
    db.execute("INSERT INTO open_rows SELECT generate_series(1, 5)")
    db.execute("CREATE SCHEMA closed")
    db.execute("CREATE TABLE closed.hidden_rows (id int PRIMARY KEY)")
    db.execute("INSERT INTO closed.hidden_rows VALUES (1)")
    with db.login_role(
        ROLE,
        ROLE_PASSWORD,
        "GRANT SELECT ON open_rows, closed.hidden_rows TO {role}",
        "REVOKE USAGE ON SCHEMA closed FROM PUBLIC; GRANT USAGE ON SCHEMA public TO {role}",
    ) as config:
        yield config


def test_discovery_leaves_out_a_schema_without_usage_and_names_the_grant(db, role):
    lines, stderr, code = db.run_tap("--discover", config=role)
    streams = {stream["tap_stream_id"] for stream in json.loads("\n".join(lines))["streams"]}
    assert code == 0
    assert "public-open_rows" in streams and "closed-hidden_rows" not in streams
    assert (
        'Skipping schema "closed": user "tap_least" lacks USAGE on it (GRANT USAGE ON SCHEMA "closed" TO "tap_least"'
        in stderr
    )


def test_sync_of_a_table_in_a_schema_without_usage_stops_before_any_copy(db, role):
    catalog = select_all(db.discover(), only={"public-open_rows", "closed-hidden_rows"})
    messages, stderr, code = db.try_sync(catalog, role)
    assert code == 1
    assert stderr[-1] == (
        'tap-postgres: error: closed-hidden_rows: user "tap_least" lacks USAGE on schema "closed": '
        'run GRANT USAGE ON SCHEMA "closed" TO "tap_least"'
    )
    assert not records_of(messages)  # public-open_rows comes first, and was not copied either
    assert messages[-1]["type"] == "STATE"


def test_log_based_without_replication_stops_before_any_copy(db, role):
    slot = db.create_slot()
    try:
        catalog = select_all(db.discover(), only={"public-open_rows"}, method="LOG_BASED")
        messages, stderr, code = db.try_sync(catalog, role)
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    assert code == 1
    assert stderr[-1] == (
        'tap-postgres: error: user "tap_least" may not read the WAL: run ALTER ROLE "tap_least" WITH REPLICATION'
    )
    assert "Traceback" not in "\n".join(stderr)
    assert not records_of(messages)


def test_filter_schemas_naming_no_schema_warns(db):
    lines, stderr, code = db.run_tap("--discover", config=dict(db.config, filter_schemas="public,Closed"))
    assert code == 0
    assert 'filter_schemas names "Closed", which holds no table or view: check its spelling' in stderr

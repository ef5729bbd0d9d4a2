"""Database errors a user can act on end a sync with one line naming the stream, and the last STATE written."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import records_of, select_all

ROLE, ROLE_PASSWORD = "tap_limited", "limited-secret"


@pytest.fixture(scope="module")
def limited(db):
    """A role of its own: a statement timeout and SELECT on only one column of `secrets`."""
    db.execute("CREATE TABLE plain (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO plain SELECT g, 'v' FROM generate_series(1, 10) g")
    db.execute("CREATE TABLE secrets (id int PRIMARY KEY, secret text)")
    db.execute("INSERT INTO secrets VALUES (1, 'hidden')")
    db.execute("CREATE VIEW slow AS SELECT g AS id, pg_sleep(0.05)::text AS waited FROM generate_series(1, 100) g")
    db.execute("CREATE MATERIALIZED VIEW unpopulated AS SELECT 1 AS id WITH NO DATA")
    with db.login_role(
        ROLE,
        ROLE_PASSWORD,
        "ALTER ROLE {role} SET statement_timeout = '1s'",
        "GRANT SELECT ON plain, slow, unpopulated TO {role}",
        "GRANT SELECT (id) ON secrets TO {role}",
    ) as config:
        yield config


def test_unpopulated_materialized_view_is_skipped_with_a_warning_and_the_run_goes_on(db, limited):
    catalog = select_all(db.discover(), only={"public-unpopulated", "public-plain"})
    messages, stderr, code = db.try_sync(catalog, db.config)
    assert code == 0
    assert any("Skipping public-unpopulated: materialized view" in line for line in stderr)
    assert len(records_of(messages, "public-plain")) == 10
    assert not records_of(messages, "public-unpopulated")


def test_statement_timeout_is_one_line_naming_the_stream_after_the_last_state(db, limited):
    catalog = select_all(db.discover(), only={"public-plain", "public-slow"})
    messages, stderr, code = db.try_sync(catalog, limited)
    assert code == 1
    assert stderr[-1].startswith("tap-postgres: error: public-slow: canceling statement due to statement timeout: ")
    assert "raise statement_timeout" in stderr[-1]
    assert messages[-1]["type"] == "STATE"
    assert messages[-1]["value"]["currently_syncing"] == "public-slow"
    assert len(records_of(messages, "public-plain")) == 10  # the stream before it was synced


def test_column_without_select_privilege_is_one_line_naming_the_stream_before_any_copy(db, limited):
    catalog = select_all(db.discover(), only={"public-secrets", "public-plain"})
    messages, stderr, code = db.try_sync(catalog, limited)
    assert code == 1
    assert stderr[-1] == (
        'tap-postgres: error: public-secrets: user "tap_limited" lacks SELECT on column(s) "secret" of '
        '"public"."secrets": run GRANT SELECT ON "public"."secrets" TO "tap_limited", or deselect them in the catalog'
    )
    assert not records_of(messages)  # public-plain, first in order, was not copied either
    assert messages[-1]["type"] == "STATE"


def test_lost_connection_is_one_line_naming_the_stream_after_the_last_state(db, limited):
    catalog = select_all(db.discover(), only={"public-slow"})
    config = dict(db.config, application_name="tap-postgres-lost")

    def terminate_the_tap():
        time.sleep(1.5)
        db.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tap-postgres-lost'")

    killer = threading.Thread(target=terminate_the_tap)
    killer.start()
    messages, stderr, code = db.try_sync(catalog, config)
    killer.join()
    assert code == 1
    # libpq reports the termination notice, or only the closed socket, depending on timing
    assert stderr[-1].startswith("tap-postgres: error: public-slow: ")
    assert len(stderr[-1].splitlines()) == 1 and "Traceback" not in "\n".join(stderr)
    assert stderr[-1].endswith("the connection to the server was lost: rerun with the last STATE to resume")
    assert messages[-1]["type"] == "STATE"

"""The LOG_BASED suite of test_log_based.py again, read through pgoutput instead of wal2json.

Every test there runs here against a pgoutput slot whose publication the tap keeps equal to the
run's LOG_BASED tables; the few whose expectations name the plugin are redefined below.
"""

from __future__ import annotations

import pytest
from test_log_based import *  # noqa: F403 (the whole suite, collected again in this module)
from test_log_based import log_based


@pytest.fixture(scope="module", autouse=True)
def pgoutput(db):
    db.plugin = "pgoutput"


def test_missing_slot_is_a_one_line_error_with_the_sql_to_create_it(db, slot):  # noqa: F811
    catalog = log_based(db, "public-customers")
    config = dict(db.config, tap_id="Other-Pipeline", create_replication_slot=False)
    db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    try:
        lines, stderr, code = db.run_tap(
            "--catalog", str(db.write_json("catalog.json", catalog)), config=config, check=False
        )
    finally:
        db.create_slot(slot)
    assert code == 1 and lines == []
    assert stderr.strip().splitlines()[-1] == (
        'tap-postgres: error: replication slot "pipelinewise_test_log_based_pgoutput_other_pipeline" does not '
        "exist: create it with SELECT pg_create_logical_replication_slot("
        "'pipelinewise_test_log_based_pgoutput_other_pipeline', 'pgoutput'); or set \"create_replication_slot\": true"
    )

"""The LOG_BASED suite of test_log_based.py again, read through pgoutput instead of wal2json.

Every test there runs here against a pgoutput slot whose publication the tap keeps equal to the
run's LOG_BASED tables.
"""

from __future__ import annotations

import pytest
from test_log_based import *  # noqa: F403 (the whole suite, collected again in this module)


@pytest.fixture(scope="module", autouse=True)
def pgoutput(db):
    db.plugin = "pgoutput"

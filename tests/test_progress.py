"""Progress lines on a real run: a copy says how much of the table's estimate is done and the time left,
LOG_BASED how far behind the end of the WAL it reads."""

from __future__ import annotations

import json
import re

import pytest
from conftest import select_all, states_of


@pytest.fixture(scope="module")
def table(db):
    db.execute("CREATE TABLE big (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 5000) g")
    db.execute("ANALYZE big")
    return "public-big"


def progress_lines(stderr: list[str], stream_id: str) -> list[str]:
    return [line for line in stderr if f"{stream_id}: " in line and "records so far" in line]


@pytest.mark.parametrize(("method", "key"), [("FULL_TABLE", None), ("INCREMENTAL", "id")])
def test_a_copy_logs_its_percentage_of_the_estimate_and_the_time_left(db, table, method, key):
    catalog = select_all(db.discover(), method=method, replication_key=key, only={table})
    _, stderr, code = db.try_sync(catalog, config={**db.config, "progress_seconds": 0, "itersize": 1000})
    assert code == 0
    # before the first rows there is no rate to tell the time left by, past the estimate no percentage
    lines = [line for line in progress_lines(stderr, table) if "% of ~" in line and ": 0 records" not in line]
    assert len(lines) >= 3, stderr
    done = [re.search(r"records so far, \d+ records/s, (\d+)% of ~5000 rows, ~\d+ s left$", line) for line in lines]
    assert all(done), lines
    percentages = [int(match.group(1)) for match in done]
    assert percentages == sorted(percentages) and 0 < percentages[0] < 100


def test_log_based_logs_how_far_behind_the_wal_end_it_reads(db, table):
    db.create_slot()
    catalog = select_all(db.discover(), method="LOG_BASED", only={table})
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO big SELECT g, 'new ' || g FROM generate_series(5001, 25000) g")
    db.execute("UPDATE big SET name = name || '!' WHERE id > 20000")
    _, stderr, code = db.try_sync(
        catalog, config={**db.config, "progress_seconds": 0}, state=json.loads(json.dumps(state))
    )
    assert code == 0
    lines = progress_lines(stderr, "LOG_BASED")
    behind = [
        re.search(r"records so far, \d+ records/s, (\d+) bytes \((\d+|inf) s\) behind the end of the WAL$", line)
        for line in lines
    ]
    assert lines and all(behind), lines
    assert any(int(match.group(1)) > 0 for match in behind), lines


def test_progress_seconds_must_not_be_negative(db, table):
    catalog = select_all(db.discover(), only={table})
    _, stderr, code = db.try_sync(catalog, config={**db.config, "progress_seconds": -1})
    assert code != 0 and 'config key "progress_seconds" must be 0 or more' in stderr[-1]

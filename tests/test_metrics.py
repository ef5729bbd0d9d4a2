"""singer-sdk METRIC lines: record_count counters that add up to the records, a sync_duration timer per stream."""

from __future__ import annotations

import json
import logging

from conftest import select_all

from tap_postgres.metrics import StreamMetrics


def metric_points(stderr: str) -> list[dict]:
    return [json.loads(line.split("METRIC: ", 1)[1]) for line in stderr.splitlines() if "| singer_sdk.metrics " in line]


def test_counters_add_up_to_the_records_and_each_stream_has_its_timer(db):
    db.execute("CREATE TABLE counted (id int PRIMARY KEY, updated int)")
    db.execute("INSERT INTO counted SELECT g, g FROM generate_series(1, 45) g")
    catalog = select_all(db.discover(), method="INCREMENTAL", replication_key="updated", only=["public-counted"])
    path = db.write_json("catalog.json", catalog)
    _, stderr, _ = db.run_tap("--catalog", str(path), config=dict(db.config, itersize=10))
    points = metric_points(stderr)
    tags = {"stream": "public-counted", "replication_method": "INCREMENTAL"}
    counters = [point for point in points if point["type"] == "counter"]
    assert counters and all(point["metric"] == "record_count" and point["tags"] == tags for point in counters)
    assert sum(point["value"] for point in counters) == 45
    timers = [point for point in points if point["type"] == "timer"]
    assert [point["metric"] for point in timers] == ["sync_duration"]
    assert timers[0]["tags"] == {**tags, "status": "succeeded"} and timers[0]["value"] >= 0


def test_a_counter_line_per_interval_holds_the_records_since_the_last(caplog):
    caplog.set_level(logging.INFO, logger="singer_sdk.metrics")
    metrics = StreamMetrics("public-x", interval=0)
    metrics.add(3)
    metrics.add(4)
    metrics.finish()
    values = [json.loads(r.getMessage().split("METRIC: ", 1)[1])["value"] for r in caplog.records]
    assert values[:3] == [3, 4, 0]

"""The docs keep up with the code: every setting is in the README and config.sample.json, catalog.sample.json is real."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tap_postgres.catalog import parse_catalog
from tap_postgres.config import SETTINGS, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    # rows of the settings table: | key | type | default | meaning |
    rows = re.findall(
        r"^\| (\w+) \| (?:string|integer|boolean|object) \|[^|\n]*\|[^|\n]*\|$", readme, flags=re.MULTILINE
    )
    documented = set(rows)
    assert documented == {setting.name for setting in SETTINGS}


def test_config_sample_has_every_setting_and_is_valid():
    sample = json.loads((ROOT / "config.sample.json").read_text())
    assert set(sample) == {setting.name for setting in SETTINGS}
    parse_config(sample)


def test_readme_names_the_two_fresh_machine_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def without_choices(metadata: list[dict]) -> list[dict]:
    """Drop what a user sets (selection, method, key) and what differs by database (row-count, its name)."""
    user_keys = {"selected", "replication-method", "replication-key", "row-count", "database-name"}
    return [
        {
            "breadcrumb": item["breadcrumb"],
            "metadata": {k: v for k, v in item["metadata"].items() if k not in user_keys},
        }
        for item in metadata
    ]


def test_catalog_sample_is_discoverys_catalog_of_the_demo_schema_with_one_stream_per_method(db):
    sys.path.insert(0, str(ROOT / "demo"))
    from run_demo import SAMPLE_SCHEMA

    db.execute(SAMPLE_SCHEMA)
    discovered = {entry["tap_stream_id"]: entry for entry in db.discover()["streams"]}
    sample = json.loads((ROOT / "catalog.sample.json").read_text())
    streams = parse_catalog(sample, parse_config(db.config))
    assert sorted(stream.replication_method for stream in streams) == ["FULL_TABLE", "INCREMENTAL", "LOG_BASED"]
    for entry in sample["streams"]:
        expected = discovered[entry["tap_stream_id"]]
        assert entry["schema"] == expected["schema"]
        assert without_choices(entry["metadata"]) == without_choices(expected["metadata"])

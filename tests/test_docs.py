"""The docs keep up with the code: every setting is in the README table and in config.sample.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tap_postgres.config import SETTINGS, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    # rows of the settings table: | key | type | default | meaning |
    rows = re.findall(r"^\| (\w+) \| (?:string|integer|boolean) \|[^|\n]*\|[^|\n]*\|$", readme, flags=re.MULTILINE)
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

"""--about in singer-sdk's three forms, and a fast start: the commands that need no SDK never import it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TAP, select_all

from tap_postgres import about

# modules whose import costs a tenth of a second or more: only the paths that use them import them
HEAVY = ("singer_sdk", "boto3", "botocore", "jsonschema")


def imported_modules(args: list[str]) -> set[str]:
    """Run the tap with `args` under -X importtime and return the top-level packages it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", *TAP[1:], *args], capture_output=True, timeout=60)
    names = set()
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [["--version"], ["--about"], ["--about", "--format", "json"]])
def test_version_and_about_import_neither_the_sdk_nor_psycopg2(args):
    modules = imported_modules(args)
    assert "tap_postgres" in modules
    assert not modules & {*HEAVY, "psycopg2"}


def test_a_full_table_sync_imports_no_sdk_and_no_boto3(db):
    db.execute("CREATE TABLE one_row (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO one_row VALUES (1, 'a')")
    catalog = select_all(db.discover(), only=["public-one_row"])
    config_path, catalog_path = db.write_json("config.json", db.config), db.write_json("catalog.json", catalog)
    modules = imported_modules(["--config", str(config_path), "--catalog", str(catalog_path)])
    assert "psycopg2" in modules  # the run did connect
    assert not modules & set(HEAVY)


@pytest.mark.parametrize("output_format", [None, "json", "markdown"])
def test_about_is_what_singer_sdks_formatter_prints(output_format):
    from singer_sdk import about as sdk_about

    info = about.about_info()
    sdk_info = sdk_about.AboutInfo(
        name=info["name"],
        description=info["description"],
        version=info["version"],
        sdk_version=info["sdk_version"],
        supported_python_versions=info["supported_python_versions"],
        capabilities=[_Capability(name) for name in info["capabilities"]],
        settings=info["settings"],
        env_var_prefix="TAP_POSTGRES_",
    )
    expected = sdk_about.AboutFormatter.get_formatter(output_format or "text").format_about(sdk_info)
    printed = subprocess.run(
        [*TAP, "--about", *(["--format", output_format] if output_format else [])], capture_output=True, check=True
    ).stdout.decode()
    assert printed == expected + "\n"


class _Capability(str):
    """A capability as singer-sdk's formatter reads one: a str with a `value`."""

    @property
    def value(self) -> str:
        return str(self)


def test_about_reports_the_installed_sdk_and_every_capability_by_its_sdk_name():
    from importlib import metadata

    from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

    info = json.loads(subprocess.run([*TAP, "--about", "--format", "json"], capture_output=True, check=True).stdout)
    assert info["sdk_version"] == metadata.version("singer-sdk")
    known = {capability.value for capability in (*PluginCapabilities, *TapCapabilities)}
    assert set(info["capabilities"]) <= known
    assert len(info["capabilities"]) == len(set(info["capabilities"]))


def test_test_mode_writes_one_record_of_each_stream_and_no_state(db):
    db.execute("CREATE TABLE IF NOT EXISTS tested_a (id int PRIMARY KEY, secret text)")
    db.execute("CREATE TABLE IF NOT EXISTS tested_b (id int PRIMARY KEY)")
    db.execute("INSERT INTO tested_a SELECT g, 's' || g FROM generate_series(1, 5) g ON CONFLICT DO NOTHING")
    lines, _, _ = db.run_tap("--test")
    messages = [json.loads(line) for line in lines]
    records = {}
    for message in messages:
        assert message["type"] in ("SCHEMA", "RECORD")
        if message["type"] == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    assert records["public-tested_a"] == [{"id": 1, "secret": "s1"}]
    assert "public-tested_b" not in records
    assert {"public-tested_a", "public-tested_b"} <= {m["stream"] for m in messages if m["type"] == "SCHEMA"}


def test_test_schema_writes_only_schemas_of_the_catalogs_streams_mapped(db):
    db.execute("CREATE TABLE IF NOT EXISTS tested_a (id int PRIMARY KEY, secret text)")
    catalog = select_all(db.discover(), only=["public-tested_a"])
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] != "public-tested_a":
            entry["metadata"][0]["metadata"]["selected"] = False
    config = dict(db.config, stream_maps={"public-tested_a": {"secret": None, "__alias__": "a"}})
    path = db.write_json("test-catalog.json", catalog)
    lines, _, _ = db.run_tap("--test=schema", "--catalog", str(path), config=config)
    messages = [json.loads(line) for line in lines]
    assert [(m["type"], m["stream"]) for m in messages] == [("SCHEMA", "a")]
    assert set(messages[0]["schema"]["properties"]) == {"id"}

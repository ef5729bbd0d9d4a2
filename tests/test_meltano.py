"""Meltano: the Hub definition in meltano/ equals --about, and real Meltano runs the tap into target-jsonl."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TAP

ROOT = Path(__file__).resolve().parent.parent
HUB_FILE = ROOT / "meltano" / "tap-postgres.yml"  # python meltano/update_definition.py brings it up to date
TARGETS_DIR = Path(os.environ.get("TAP_TARGETS_DIR", ROOT / ".venv-targets"))
MELTANO = TARGETS_DIR / "meltano" / "bin" / "meltano"
TARGET_JSONL = TARGETS_DIR / "jsonl" / "bin" / "target-jsonl"
JSON_KINDS = {"string": "string", "integer": "integer", "boolean": "boolean", "object": "object"}


def hub_definition() -> dict:
    return yaml.safe_load(HUB_FILE.read_text())


def about() -> dict:
    return json.loads(subprocess.run([*TAP, "--about", "--format", "json"], capture_output=True, check=True).stdout)


def test_the_hub_definition_equals_about():
    hub, info = hub_definition(), about()
    assert hub["name"] == info["name"] and hub["executable"] == "tap-postgres" and hub["namespace"] == "tap_postgres"
    assert hub["capabilities"] == info["capabilities"]
    properties = info["settings"]["properties"]
    assert [setting["name"] for setting in hub["settings"]] == list(properties)
    for setting in hub["settings"]:
        schema = properties[setting["name"]]
        assert setting["label"] and setting["description"] == schema["description"], setting["name"]
        assert setting.get("value") == schema.get("default"), setting["name"]
        assert setting.get("sensitive", False) == schema.get("writeOnly", False), setting["name"]
        if "enum" in schema:
            assert setting["kind"] == "options"
            assert [option["value"] for option in setting["options"]] == schema["enum"]
        else:
            assert JSON_KINDS[setting["kind"]] == schema["type"][0], setting["name"]
    assert hub["settings_group_validation"] == [info["settings"]["required"]]


def test_the_pip_url_installs_this_checkout_under_the_name_about_gives():
    # no published package or public repository yet (`tap-postgres` on PyPI is singer-io's tap): the
    # definition installs the checkout that TAP_POSTGRES_CHECKOUT names, as Meltano expands it
    args = shlex.split(hub_definition()["pip_url"].replace("${TAP_POSTGRES_CHECKOUT}", str(ROOT)))
    assert args == ["-e", str(ROOT)]
    name = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, check=True).stdout
    assert name.decode().split()[-1] == about()["name"] == hub_definition()["name"]


def test_about_lists_what_meltano_users_rely_on():
    assert {"batch", "stream-maps", "schema-flattening", "test", "log-based", "state", "catalog", "discover"} <= set(
        about()["capabilities"]
    )


def require_meltano() -> None:
    if not (MELTANO.exists() and TARGET_JSONL.exists()):
        message = "Meltano or target-jsonl not installed: run `make targets` (bash tests/targets/install.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def project(db, tmp_path_factory):
    """A Meltano project whose extractor is this tap (from the Hub definition) and whose loader is target-jsonl."""
    require_meltano()
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text)")
    db.execute(
        "INSERT INTO people SELECT g, 'name ' || g, 'p' || g || '@example.org', 'ssn-' || g FROM generate_series(1, 5) g"
    )
    directory = tmp_path_factory.mktemp("meltano-project")
    hub = hub_definition()
    extractor = {key: hub[key] for key in ("name", "namespace", "capabilities", "settings")}
    # installed already: Meltano runs the executables it is given instead of making venvs of its own
    extractor["executable"] = str(Path(sys.executable).parent / "tap-postgres")
    extractor["config"] = {key: value for key, value in db.config.items() if key != "password"}
    extractor["select"] = ["public-people.*"]
    extractor["metadata"] = {"public-people": {"replication-method": "INCREMENTAL", "replication-key": "id"}}
    loader = {
        "name": "target-jsonl",
        "namespace": "target_jsonl",
        "executable": str(TARGET_JSONL),
        "settings": [{"name": "destination_path"}, {"name": "do_timestamp_file", "kind": "boolean"}],
        "config": {"destination_path": str(directory / "output"), "do_timestamp_file": False},
    }
    (directory / "output").mkdir()
    meltano_yml = {
        "version": 1,
        "default_environment": "test",
        "project_id": "tap-postgres-tests",
        "environments": [{"name": "test"}],
        "send_anonymous_usage_stats": False,
        "plugins": {"extractors": [extractor], "loaders": [loader]},
    }
    (directory / "meltano.yml").write_text(yaml.safe_dump(meltano_yml, sort_keys=False))
    return directory


def meltano(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", MELTANO_DISABLE_TRACKING="true")
    environ.update(env or {})
    result = subprocess.run([str(MELTANO), *args], cwd=project, capture_output=True, timeout=300, env=environ)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return result


def output_records(project: Path) -> list[dict]:
    path = project / "output" / "public-people.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_meltano_runs_the_tap_twice_with_state_then_with_a_hashing_map(db, project):
    password = {"TAP_POSTGRES_PASSWORD": db.config["password"]}
    meltano(project, "run", "tap-postgres", "target-jsonl", env=password)
    assert [record["id"] for record in output_records(project)] == [1, 2, 3, 4, 5]
    state = json.loads(meltano(project, "state", "get", "test:tap-postgres-to-target-jsonl").stdout)
    assert state["singer_state"]["bookmarks"]["public-people"]["replication_key_value"] == 5

    db.execute("INSERT INTO people VALUES (6, 'name 6', 'p6@example.org', 'ssn-6')")
    meltano(project, "run", "tap-postgres", "target-jsonl", env=password)
    # the bookmark is inclusive (as pipelinewise's): row 5 again, then the new row
    assert [record["id"] for record in output_records(project)] == [1, 2, 3, 4, 5, 5, 6]

    (project / "output" / "public-people.jsonl").unlink()
    maps = json.dumps({"public-people": {"email": "md5(email)", "ssn": None}})
    meltano(
        project,
        "run",
        "--full-refresh",
        "tap-postgres",
        "target-jsonl",
        env={**password, "TAP_POSTGRES_STREAM_MAPS": maps},
    )
    records = output_records(project)
    assert [record["id"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert all("ssn" not in record for record in records)
    assert records[0]["email"] == hashlib.md5(b"p1@example.org").hexdigest()

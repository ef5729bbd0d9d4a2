"""A server older than the lowest supported version (13) gets one line at connect time, before any work.

The cluster runs PostgreSQL 12 from the pinned build of tests/pgversions.py (`make pg-versions`).
"""

from __future__ import annotations

import json
import subprocess

import pgversions
import pytest
from conftest import TAP, private_cluster, select_all

EXPECTED = (
    "tap-postgres: error: PostgreSQL 12.22 is not supported: tap-postgres reads PostgreSQL 13 or later; "
    "upgrade the server"
)


@pytest.fixture(scope="module")
def old_server():
    """A PostgreSQL 12 cluster with one table."""
    try:
        binaries = pgversions.bin_dir("12")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with private_cluster("tap-postgres-pg12-", binaries=binaries) as cluster:
        with cluster.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        yield cluster


def run_tap(server, tmp_path, *args, **config_extra):
    """Run the CLI on the old server; return (stdout, stderr lines, exit code)."""
    config = {"host": server.host, "port": server.port, "user": server.user, "password": server.password}
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**config, "dbname": "postgres", **config_extra}))
    result = subprocess.run([*TAP, "--config", str(config_path), *args], capture_output=True, text=True, timeout=60)
    return result.stdout, result.stderr.strip().splitlines(), result.returncode


def test_discovery_on_12_is_one_line(old_server, tmp_path):
    stdout, stderr, code = run_tap(old_server, tmp_path, "--discover")
    assert (stdout, stderr, code) == ("", [EXPECTED], 1)


@pytest.mark.parametrize("method", ["FULL_TABLE", "LOG_BASED"])
def test_a_sync_on_12_is_one_line_and_touches_nothing(old_server, tmp_path, method):
    """No record, no slot, no publication: the run stops before it reads or creates anything."""
    stream = {
        "tap_stream_id": "public-t",
        "table_name": "t",
        "stream": "t",
        "schema": {"type": "object", "properties": {"id": {"type": ["integer"]}, "v": {"type": ["null", "string"]}}},
        "metadata": [
            {"breadcrumb": [], "metadata": {"schema-name": "public", "table-key-properties": ["id"]}},
            {"breadcrumb": ["properties", "id"], "metadata": {"sql-datatype": "integer", "inclusion": "automatic"}},
            {"breadcrumb": ["properties", "v"], "metadata": {"sql-datatype": "text", "inclusion": "available"}},
        ],
    }
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(select_all({"streams": [stream]}, method)))
    stdout, stderr, code = run_tap(
        old_server, tmp_path, "--catalog", str(catalog_path), output_plugin="pgoutput", create_replication_slot=True
    )
    assert (stdout, stderr, code) == ("", [EXPECTED], 1)
    with old_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)")
        assert cur.fetchone() == (0, 0)

"""fast_sync_rds against a real S3-compatible server (moto) and a PL/Python stand-in for RDS's aws_s3.

The stand-in (tests/aws_s3_stub.sql) has aws_s3's signatures and result columns, runs the query,
writes CSV, splits parts past aws_s3_stub.part_bytes and uploads them with boto3. The tests read the
objects back with boto3 and compare them with the table.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from conftest import select_all, states_of
from pgcluster import free_port, wait_until_ready

BUCKET = "exports"
REGION = "eu-west-1"
STUB_SQL = (Path(__file__).parent / "aws_s3_stub.sql").read_text()


@pytest.fixture(scope="module")
def s3_endpoint():
    """Run moto's standalone S3 server on 127.0.0.1, with a bucket, and point boto3 at it."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {name: os.environ.get(name) for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        wait_until_ready(port)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def catalog(db, s3_endpoint):
    db.execute(STUB_SQL)
    db.execute(f"ALTER DATABASE {db.name} SET aws_s3_stub.endpoint_url = '{s3_endpoint}'")
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(8, 2), tags text[], "
        "paid boolean, updated_at timestamptz NOT NULL)"
    )
    db.execute(
        "INSERT INTO orders SELECT g, CASE WHEN g % 10 = 0 THEN 'has, comma and \"quote\"' ELSE 'n' || g END, "
        "g * 1.25, ARRAY['t' || g], g % 2 = 0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour' "
        "FROM generate_series(1, 300) g"
    )
    return db.discover()


def fast_config(db, **extra) -> dict:
    settings = dict(
        fast_sync_rds=True,
        fast_sync_rds_s3_bucket=BUCKET,
        fast_sync_rds_s3_prefix="pg/exports/",
        fast_sync_rds_s3_region=REGION,
    )
    return {**db.config, **settings, **extra}


def exported_rows(message: dict) -> list[list[str]]:
    """Read every part of an export back from S3 and parse its CSV."""
    client = boto3.client("s3", region_name=REGION)
    keys = [message["s3_path"]] + [f"{message['s3_path']}_part{n}" for n in range(2, message["files_uploaded"] + 1)]
    text = "".join(client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() for key in keys)
    return list(csv.reader(io.StringIO(text)))


def info_of(messages: list[dict]) -> dict:
    return next(m for m in messages if m["type"] == "FAST_SYNC_RDS_S3_INFO")


def test_full_table_exports_every_row_and_emits_the_info_message(db, catalog):
    messages = db.sync(select_all(json.loads(json.dumps(catalog))), config=fast_config(db))
    assert [m["type"] for m in messages] == ["SCHEMA", "FAST_SYNC_RDS_S3_INFO", "ACTIVATE_VERSION", "STATE", "STATE"]
    info = info_of(messages)
    assert set(info) == {
        "type", "stream", "s3_bucket", "s3_path", "s3_region", "rows_uploaded", "files_uploaded",
        "bytes_uploaded", "version", "time_extracted", "replication_method",
    }  # fmt: skip
    assert info["stream"] == "public-orders"
    assert re.fullmatch(r"pg/exports/public-orders/\d{4}-\d\d-\d\d-\d{6}_[0-9a-f]{8}\.csv", info["s3_path"])
    assert (info["s3_bucket"], info["s3_region"], info["replication_method"]) == (BUCKET, REGION, "FULL_TABLE")
    assert (info["rows_uploaded"], info["files_uploaded"]) == (300, 1)

    rows = exported_rows(info)
    assert len(rows) == 300
    assert rows[9][:5] == ["10", 'has, comma and "quote"', "12.50", '["t10"]', "t"]
    assert rows[0][6] == rows[0][8] and rows[0][7] == ""  # _SDC_BATCHED_AT, _SDC_DELETED_AT, _SDC_EXTRACTED_AT
    bookmark = states_of(messages)[-1]["bookmarks"]["public-orders"]
    assert bookmark["fast_sync_rds_s3_info"] == {k: v for k, v in info.items() if k != "type"}
    assert bookmark["version"] == info["version"]


def test_incremental_exports_only_rows_at_or_after_the_bookmark(db, catalog):
    chosen = select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", "updated_at")
    config = fast_config(db, fast_sync_rds_add_metadata_columns=False)
    first = db.sync(chosen, config=config)
    assert info_of(first)["rows_uploaded"] == 300
    bookmark = states_of(first)[-1]["bookmarks"]["public-orders"]
    assert bookmark["replication_key_value"] == "2024-01-13T12:00:00+00:00"

    db.execute("UPDATE orders SET updated_at = '2024-02-01', note = 'late change' WHERE id = 5")
    second = db.sync(chosen, state=states_of(first)[-1], config=config)
    rows = exported_rows(info_of(second))
    assert sorted((row[0], row[1]) for row in rows) == [("300", 'has, comma and "quote"'), ("5", "late change")]
    assert len(rows[0]) == 6  # no metadata columns
    assert info_of(second)["version"] == info_of(first)["version"]


def test_large_export_is_split_into_parts(db, catalog):
    db.execute(f"ALTER DATABASE {db.name} SET aws_s3_stub.part_bytes = 4000")
    try:
        messages = db.sync(select_all(json.loads(json.dumps(catalog))), config=fast_config(db))
    finally:
        db.execute(f"ALTER DATABASE {db.name} RESET aws_s3_stub.part_bytes")
    info = info_of(messages)
    assert info["files_uploaded"] > 2
    rows = exported_rows(info)
    assert sorted(int(row[0]) for row in rows) == list(range(1, 301))


def test_missing_aws_s3_extension_says_rds_is_needed(db, server, catalog):
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS plain_postgres")
        cur.execute("CREATE DATABASE plain_postgres")
    plain = server.connect("plain_postgres")
    with plain.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY)")
    plain.close()
    config = dict(fast_config(db), dbname="plain_postgres")
    chosen = select_all(db.discover(config), only={"public-t"})
    _, stderr, code = db.run_tap("--catalog", str(db.write_json("catalog.json", chosen)), config=config, check=False)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "tap-postgres: error: fast_sync_rds needs the aws_s3 extension, which only RDS and Aurora PostgreSQL "
        "have: run CREATE EXTENSION aws_s3 CASCADE there, or set fast_sync_rds to false"
    )


def test_export_failure_reports_the_database_message(db, catalog):
    config = fast_config(db, fast_sync_rds_s3_bucket="no-such-bucket")
    chosen = select_all(json.loads(json.dumps(catalog)))
    started = time.monotonic()
    _, stderr, code = db.run_tap("--catalog", str(db.write_json("catalog.json", chosen)), config=config, check=False)
    assert code == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        "tap-postgres: error: export of public-orders to s3://no-such-bucket/pg/exports/public-orders/"
    )
    assert "could not upload to s3://no-such-bucket/" in last and "NoSuchBucket" in last
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 60

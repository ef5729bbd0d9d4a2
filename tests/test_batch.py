"""BATCH: copies written into singer-sdk JSON Lines batch files, each announced before the STATE that covers it."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
from conftest import records_of, select_all
from test_fast_sync_rds import BUCKET, REGION, s3_endpoint  # noqa: F401 -- the moto S3 server fixture

ROWS = 57


@pytest.fixture(scope="module")
def catalog(db):
    db.execute(
        "CREATE TABLE people (id int PRIMARY KEY, name text, email text, born date, "
        "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    db.execute(
        f"INSERT INTO people (id, name, email, born) SELECT g, 'name ' || g, 'p' || g || '@example.org', "
        f"date '1980-01-01' + g FROM generate_series(1, {ROWS}) g"
    )
    db.execute("CREATE TABLE empty_table (id int PRIMARY KEY)")
    return db.discover()


def batch_config(root: str, compression: str = "gzip", batch_size: int = 10, prefix: str = "") -> dict:
    return {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": root, "prefix": prefix},
        "batch_size": batch_size,
    }


def read_batch_file(url: str, compression: str) -> list[dict]:
    """The records of one batch file, read as singer-sdk's target reads them."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        body = boto3.client("s3", region_name=REGION).get_object(Bucket=parsed.netloc, Key=parsed.path[1:])["Body"]
        data = body.read()
    else:
        data = Path(parsed.path).read_bytes()
    if compression == "gzip":
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.splitlines()]


def batched_records(messages: list[dict], compression: str) -> list[dict]:
    """Every record the BATCH messages name, checking that each file is complete before the next STATE."""
    records = []
    for message in messages:
        if message["type"] == "BATCH":
            assert message["encoding"] == {"format": "jsonl", "compression": compression}
            for url in message["manifest"]:
                records += read_batch_file(url, compression)
    return records


def run(db, catalog, stream: str, method: str, config_extra: dict, state=None, **select) -> list[dict]:
    chosen = select_all(copy.deepcopy(catalog), method=method, only=[stream], **select)
    return db.sync(chosen, state=state, config=dict(db.config, **config_extra))


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_full_table_files_hold_the_records_the_record_path_writes(db, catalog, tmp_path, compression):
    plain = run(db, catalog, "public-people", "FULL_TABLE", {})
    messages = run(
        db, catalog, "public-people", "FULL_TABLE", {"batch_config": batch_config(tmp_path.as_uri(), compression)}
    )
    assert records_of(messages) == []
    batches = [message for message in messages if message["type"] == "BATCH"]
    assert batches and all(message["stream"] == "public-people" for message in batches)
    files = [url for message in batches for url in message["manifest"]]
    suffix = ".json.gz" if compression == "gzip" else ".json"
    assert all(url.startswith(tmp_path.as_uri() + "/tap-postgres--public-people-") for url in files)
    assert all(url.endswith(suffix) for url in files)
    # batch_size 10: 57 rows in five full files and one of 7
    assert sorted(len(read_batch_file(url, compression)) for url in files) == [7, 10, 10, 10, 10, 10]
    assert sorted(batched_records(messages, compression), key=lambda r: r["id"]) == sorted(
        records_of(plain), key=lambda r: r["id"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(Path(urlparse(url).path).name for url in files)


def test_each_state_follows_the_batch_of_the_rows_it_covers(db, catalog, tmp_path):
    """itersize 20: a STATE after every 20 keys; every file named before a STATE exists and is complete then."""
    config = {"batch_config": batch_config(tmp_path.as_uri(), batch_size=15), "itersize": 20}
    messages = run(db, catalog, "public-people", "FULL_TABLE", config)
    kinds = [message["type"] for message in messages]
    announced = 0
    for index, message in enumerate(messages):
        if message["type"] == "BATCH":
            announced += sum(len(read_batch_file(url, "gzip")) for url in message["manifest"])
        if message["type"] == "STATE":
            resume_key = message["value"]["bookmarks"]["public-people"].get("resume_key")
            if resume_key is not None:
                assert announced == int(resume_key[0]), (index, kinds)
    assert announced == ROWS
    # one ACTIVATE_VERSION, before the files: after them it would delete the rows a target loaded from them
    assert kinds.count("ACTIVATE_VERSION") == 1
    assert kinds.index("ACTIVATE_VERSION") < kinds.index("BATCH")


def test_incremental_bookmark_moves_only_after_its_files(db, catalog, tmp_path):
    config = {"batch_config": batch_config(tmp_path.as_uri(), batch_size=1000, prefix="inc-"), "itersize": 25}
    messages = run(db, catalog, "public-people", "INCREMENTAL", config, replication_key="id")
    assert sorted(record["id"] for record in batched_records(messages, "gzip")) == list(range(1, ROWS + 1))
    seen_batch = False
    for message in messages:
        seen_batch = seen_batch or message["type"] == "BATCH"
        if message["type"] == "STATE" and message["value"]["bookmarks"]["public-people"].get("replication_key_value"):
            assert seen_batch
    assert all(path.name.startswith("inc-tap-postgres--public-people-") for path in tmp_path.iterdir())
    state = next(m["value"] for m in reversed(messages) if m["type"] == "STATE")
    again = run(db, catalog, "public-people", "INCREMENTAL", config, state=state, replication_key="id")
    assert [record["id"] for record in batched_records(again, "gzip")] == [ROWS]  # the bookmark is inclusive


def test_an_empty_table_writes_no_file(db, catalog, tmp_path):
    messages = run(db, catalog, "public-empty_table", "FULL_TABLE", {"batch_config": batch_config(tmp_path.as_uri())})
    assert [m["type"] for m in messages if m["type"] == "BATCH"] == []
    assert list(tmp_path.iterdir()) == []


def test_log_based_copies_into_files_and_streams_changes_as_records(db, catalog, tmp_path):
    db.create_slot()
    config = {
        "batch_config": batch_config(tmp_path.as_uri(), batch_size=100),
        "logical_poll_total_seconds": 2,
        "break_at_end_lsn": True,
    }
    first = run(db, catalog, "public-people", "LOG_BASED", config)
    assert len(batched_records(first, "gzip")) == ROWS and records_of(first) == []
    db.execute("UPDATE people SET name = 'changed' WHERE id = 3")
    state = next(m["value"] for m in reversed(first) if m["type"] == "STATE")
    second = run(db, catalog, "public-people", "LOG_BASED", config, state=state)
    assert [m["type"] for m in second if m["type"] == "BATCH"] == []
    assert [record["name"] for record in records_of(second)] == ["changed"]


def test_s3_storage_uploads_each_file_before_its_batch_message(db, catalog, s3_endpoint):  # noqa: F811
    root = f"s3://{BUCKET}/batches/run1"
    messages = run(db, catalog, "public-people", "FULL_TABLE", {"batch_config": batch_config(root, batch_size=20)})
    files = [url for message in messages if message["type"] == "BATCH" for url in message["manifest"]]
    assert len(files) == 3 and all(url.startswith(root + "/tap-postgres--public-people-") for url in files)
    assert sorted(record["id"] for record in batched_records(messages, "gzip")) == list(range(1, ROWS + 1))


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            {"encoding": {"format": "parquet"}, "storage": {"root": "file:///tmp"}},
            "config key \"batch_config.encoding.format\" is 'parquet': the tap writes jsonl batch files only",
        ),
        (
            {"encoding": {"format": "jsonl", "compression": "zstd"}, "storage": {"root": "file:///tmp"}},
            'config key "batch_config.encoding.compression" must be gzip or none',
        ),
        ({"encoding": {}, "storage": {"root": "/tmp/x"}}, 'config key "batch_config.storage.root" must be a file://'),
        ({"encoding": {}, "storage": {"root": "file:///tmp"}, "batch_size": 0}, '"batch_config.batch_size" must be'),
        ({"encoding": {}}, 'config key "batch_config.storage" must be an object'),
    ],
)
def test_a_wrong_batch_config_is_one_line_before_connecting(db, catalog, batch, message):
    chosen = select_all(copy.deepcopy(catalog), only=["public-people"])
    messages, stderr, code = db.try_sync(chosen, config=dict(db.config, batch_config=batch))
    assert code == 1 and messages == []
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1 and message in errors[0], stderr


def test_an_unwritable_root_is_one_line_and_the_last_state(db, catalog, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    chosen = select_all(copy.deepcopy(catalog), only=["public-people"])
    config = dict(db.config, batch_config=batch_config((blocker / "sub").as_uri()))
    messages, stderr, code = db.try_sync(chosen, config=config)
    assert code == 1
    assert [line for line in stderr if line.startswith("tap-postgres: error:")][0].startswith(
        "tap-postgres: error: cannot write batch files under"
    ), stderr
    assert messages and messages[-1]["type"] == "STATE" and "BATCH" not in [m["type"] for m in messages]


def test_a_value_over_max_value_bytes_is_null_in_the_batch_file_with_its_warning(db, catalog, tmp_path):
    db.execute("INSERT INTO people (id, name, email) VALUES (1000, repeat('x', 500), 'long@example.org')")
    try:
        chosen = select_all(copy.deepcopy(catalog), only=["public-people"])
        config = dict(db.config, max_value_bytes=100, batch_config=batch_config(tmp_path.as_uri(), "none", 1000))
        messages, stderr, code = db.try_sync(chosen, config=config)
    finally:
        db.execute("DELETE FROM people WHERE id = 1000")
    assert code == 0, "\n".join(stderr)
    records = batched_records(messages, "none")
    long = [record for record in records if record["id"] == 1000]
    assert long == [{**long[0], "name": None}] and long[0]["email"] == "long@example.org"
    assert any('column "name" of the row with key {"id": 1000}' in line for line in stderr), stderr

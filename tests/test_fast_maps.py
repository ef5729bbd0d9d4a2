"""Stream maps the server applies (fast_maps.py) make exactly what singer-sdk's mapper makes on the Python path.

Each case syncs in this process twice, once with the server's map and once with it switched off
(every map through the SDK's PluginMapper), and compares the output line for line: SCHEMA,
key_properties, ACTIVATE_VERSION, STATE and every RECORD, key order included.
"""

from __future__ import annotations

import contextlib
import decimal
import gzip
import hashlib
import io
import json
import re
from unittest import mock

import pytest
from conftest import select_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_postgres import fast_maps
from tap_postgres.catalog import parse_catalog
from tap_postgres.config import parse_config
from tap_postgres.mapping import MappingWriter, StreamMapError
from tap_postgres.output import MessageWriter
from tap_postgres.state import parse_state
from tap_postgres.sync import sync_streams

STREAM = "public-people"
NOT_NULL_STRINGS = ["email", "code", "pad", "uid", "created"]
NULLABLE_STRINGS = ["name", "note"]
OTHERS = ["id", "amount", "flag", "tags", "doc", "self"]
COLUMNS = ["id", *NOT_NULL_STRINGS, *NULLABLE_STRINGS, "amount", "flag", "tags", "doc", "self"]
NEW_NAMES = ["a", "b", "hashed", "x" * 63]


@pytest.fixture(scope="module")
def catalog(db):
    db.execute(
        "CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL, code varchar(12) NOT NULL, pad char(6) NOT NULL, "
        "uid uuid NOT NULL, created timestamptz NOT NULL, name text, note text, amount numeric(20, 4), "
        "flag bool, tags text[], doc jsonb, self text)"
    )
    db.execute(
        "INSERT INTO people SELECT g, 'p' || g || E'@exämple.org \"q\" \\\\ \t', 'c' || g, 'd' || g, "
        "md5(g::text)::uuid, '2020-01-01 00:00:00+00'::timestamptz + g * interval '1 day 1 microsecond', "
        "CASE WHEN g % 3 <> 0 THEN 'näme ' || g END, CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'n' || g END, "
        "g * 1.25, g % 2 = 0, ARRAY['t' || g, NULL], jsonb_build_object('k', g), 's' || g "
        "FROM generate_series(1, 12) g"
    )
    return select_all(db.discover(), only=[STREAM])


def run(db, catalog: dict, settings: dict, fast: bool = True, state: dict | None = None) -> list[bytes]:
    """Sync in this process; return the output lines, with what differs between two runs blanked."""
    config = parse_config(dict(db.config, **settings))
    streams = parse_catalog(json.loads(json.dumps(catalog), parse_float=decimal.Decimal), config)
    out = io.BytesIO()
    slow = mock.patch.object(MappingWriter, "fast_map", lambda *_: None) if not fast else contextlib.nullcontext()
    with slow:
        sync_streams(config, streams, parse_state(state or {}), MessageWriter(out))
    text = re.sub(rb'"time_extracted":"[^"]*"', b'"time_extracted":"T"', out.getvalue())
    text = re.sub(rb'"version":\d+', b'"version":1', text)
    text = re.sub(rb'"lsn":\d+', b'"lsn":1', text)
    return text.splitlines()


def exactly(line: bytes) -> list:
    """Return a JSON line as nested lists of (key, value), numbers as their text: what differs but whitespace.

    The SDK's path writes its records anew (orjson, no spaces in a jsonb value), the server's as it renders them.
    """
    return json.loads(line, object_pairs_hook=list, parse_float=str, parse_int=str)


@contextlib.contextmanager
def counting_fast_maps():
    """Count the copies the server mapped, so a case knows which path it took."""
    made = []
    original = fast_maps.FastMapWriter.__init__

    def spy(self, writer, fast_map):
        made.append(fast_map)
        original(self, writer, fast_map)

    with mock.patch.object(fast_maps.FastMapWriter, "__init__", spy):
        yield made


def assert_same_output(db, catalog: dict, settings: dict, state: dict | None = None) -> tuple[bool, list[dict]]:
    """Assert the server-mapped run writes what the SDK-mapped one writes; return whether the server mapped, and it."""
    with counting_fast_maps() as made:
        fast = run(db, catalog, settings, state=state)
    slow = run(db, catalog, settings, fast=False, state=state)
    assert [exactly(line) for line in fast] == [exactly(line) for line in slow]
    return bool(made), [json.loads(line) for line in fast]


def column_expression(column: str) -> st.SearchStrategy[str]:
    """The ways an expression reads a column as it is."""
    return st.sampled_from([column, f"_['{column}']", f'record["{column}"]'])


def fast_definition() -> st.SearchStrategy[str | None]:
    """A property's definition of the kinds the server applies."""
    return st.one_of(
        st.sampled_from([None, "__NULL__", "self"]),
        st.sampled_from(COLUMNS).flatmap(column_expression),
        st.sampled_from(NOT_NULL_STRINGS).map(lambda c: f"md5({c})"),
        st.sampled_from(NOT_NULL_STRINGS + NULLABLE_STRINGS).map(lambda c: f"md5({c}) if {c} else None"),
    )


@st.composite
def stream_maps(draw) -> tuple[dict, bool]:
    """A stream map of the kinds the server applies, sometimes with one the SDK must apply; and whether it is fast."""
    definition: dict = {}
    if draw(st.booleans()):
        definition["__alias__"] = "people_mapped"
    if draw(st.booleans()):
        definition["__else__"] = draw(st.sampled_from([None, "__NULL__"]))
    keys = draw(st.sampled_from([None, ["id"], ["email", "id"]]))
    if keys is not None:
        definition["__key_properties__"] = keys
    for key, value in draw(st.lists(st.tuples(st.sampled_from(COLUMNS + NEW_NAMES), fast_definition()), max_size=6)):
        if value in (None, "__NULL__") and key in ("id", "email"):
            continue  # removing a key property is a config error, tested elsewhere
        definition[key] = value
    if "__else__" in definition:
        for key in keys or ["id"]:
            definition.setdefault(key, key)  # the SDK's schema has only the properties mapped
    fast = not draw(st.integers(0, 5)) == 0
    if not fast:
        definition[draw(st.sampled_from(NEW_NAMES))] = draw(st.sampled_from(["str(id)", "id + 1", "md5(str(id))"]))
    return {draw(st.sampled_from([STREAM, "public-*", "*-people"])): definition}, fast  # exact, or a wildcard


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_maps())
def test_server_maps_write_what_singer_sdks_mapper_writes(db, catalog, generated):
    maps, fast = generated
    server_mapped, _ = assert_same_output(db, catalog, {"stream_maps": maps})
    if fast:
        assert server_mapped, maps


@pytest.mark.parametrize(
    "definition",
    [
        {"email": "md5(email)", "note": "md5(note) if note else None", "name": None, "renamed": "code", "code": None},
        {"__alias__": "people_hashed", "__else__": None, "__key_properties__": ["uid"], "uid": "uid", "h": "md5(uid)"},
    ],
)
def test_incremental_copies_map_the_same_on_both_paths(db, catalog, definition):
    incremental = select_all(json.loads(json.dumps(catalog)), method="INCREMENTAL", replication_key="id", only=[STREAM])
    assert assert_same_output(db, incremental, {"stream_maps": {STREAM: definition}})[0]


def test_log_based_copy_and_changes_map_the_same_on_both_paths(db, catalog):
    db.create_slot()
    log_based = select_all(json.loads(json.dumps(catalog)), method="LOG_BASED", only=[STREAM])
    settings = {
        "stream_maps": {STREAM: {"__alias__": "people_log", "email": "md5(email) if email else None", "name": None}},
        "logical_poll_total_seconds": 1,
    }
    server_mapped, first = assert_same_output(db, log_based, settings)
    assert server_mapped  # the initial copy
    state = next(m for m in reversed(first) if m["type"] == "STATE")["value"]
    db.execute("UPDATE people SET email = 'changed@example.org', name = 'secret' WHERE id = 2")
    server_mapped, second = assert_same_output(db, log_based, settings, state=state)
    changes = [m for m in second if m["type"] == "RECORD"]
    assert not server_mapped and [m["stream"] for m in changes] == ["people_log"]  # the SDK maps changes
    assert "name" not in changes[0]["record"]
    assert changes[0]["record"]["email"] == hashlib.md5(b"changed@example.org").hexdigest()


def test_batch_files_of_a_fast_mapped_stream_hold_the_mapped_records(db, catalog, tmp_path):
    maps = {STREAM: {"__alias__": "people_batch", "email": "md5(email)", "doc": None}}
    batch = {"encoding": {"format": "jsonl"}, "storage": {"root": tmp_path.as_uri()}}
    with counting_fast_maps() as made:
        lines = run(db, catalog, {"stream_maps": maps, "batch_config": batch})
    messages = [json.loads(line) for line in lines]
    batches = [m for m in messages if m["type"] == "BATCH"]
    assert made and [m["stream"] for m in batches] == ["people_batch"]
    files = [url.removeprefix("file://") for m in batches for url in m["manifest"]]
    records = [json.loads(line) for name in files for line in gzip.open(name)]
    expected = [
        json.loads(line)["record"]
        for line in run(db, catalog, {"stream_maps": maps}, fast=False)
        if b'"RECORD"' in line
    ]
    assert records == expected and len(records) == 12


@pytest.mark.parametrize(
    "definition",
    [
        {"email": "md5(name)"},  # md5() of a column that can be null
        {"email": "email.upper()"},
        {"__filter__": "id > 3"},
        {"h": "md5(amount)"},  # not a string
    ],
)
def test_other_maps_go_through_singer_sdks_mapper(db, catalog, definition):
    # singer-sdk's md5() of a null or a number stops the run: the copy had started on the Python path
    with counting_fast_maps() as made, contextlib.suppress(StreamMapError):
        run(db, catalog, {"stream_maps": {STREAM: definition}})
    assert not made

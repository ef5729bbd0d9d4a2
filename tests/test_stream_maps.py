"""Stream maps and flattening: the tap's output is what singer-sdk's own mapper makes of its unmapped output."""

from __future__ import annotations

import copy
import hashlib
import json
import logging

import pytest
from conftest import select_all

STREAMS = ["public-customers", "public-orders"]


@pytest.fixture(scope="module")
def catalog(db):
    db.execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, amount numeric(30, 10), "
        "profile jsonb, updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    db.execute(
        "INSERT INTO customers (id, name, email, amount, profile) SELECT g, 'name ' || g, 'c' || g || '@example.org', "
        "g * 12345678901234.0123456789, jsonb_build_object('city', 'city ' || g, 'tags', jsonb_build_object('a', g)) "
        "FROM generate_series(1, 30) g"
    )
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int, total numeric(10, 2))")
    db.execute("INSERT INTO orders SELECT g, g % 7, g * 1.5 FROM generate_series(1, 20) g")
    return select_all(db.discover(), only=STREAMS)


@pytest.fixture(scope="module")
def plain(db, catalog):
    """The unmapped run's messages, which every map case compares with."""
    return db.sync(catalog)


def only(catalog: dict, stream_id: str, method: str = "FULL_TABLE") -> dict:
    """The catalog with one stream selected."""
    chosen = copy.deepcopy(catalog)
    for stream in chosen["streams"]:
        table_md = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
        table_md["selected"] = stream["tap_stream_id"] == stream_id
    return select_all(chosen, method=method, only=[stream_id])


def sdk_mapped(messages: list[dict], settings: dict) -> list[dict]:
    """Apply singer-sdk's PluginMapper to the unmapped run's messages as an SDK tap applies it."""
    from singer_sdk.mapper import PluginMapper, RemoveRecordTransform

    mapper = PluginMapper(plugin_config=copy.deepcopy(settings), logger=logging.getLogger("test"))
    out = []
    for message in messages:
        if message["type"] == "SCHEMA":
            mapper.register_raw_stream_schema(message["stream"], message["schema"], message["key_properties"])
            for stream_map in mapper.stream_maps[message["stream"]]:
                if not isinstance(stream_map, RemoveRecordTransform):
                    out.append(
                        {
                            **message,
                            "stream": stream_map.stream_alias,
                            "schema": stream_map.transformed_schema,
                            "key_properties": list(stream_map.transformed_key_properties or []),
                        }
                    )
        elif message["type"] == "RECORD":
            for stream_map in mapper.stream_maps[message["stream"]]:
                mapped = stream_map.transform(dict(message["record"]))
                if mapped is not None:
                    out.append({**message, "stream": stream_map.stream_alias, "record": mapped})
        elif message["type"] == "ACTIVATE_VERSION":
            for stream_map in mapper.stream_maps[message["stream"]]:
                if not isinstance(stream_map, RemoveRecordTransform):
                    out.append({**message, "stream": stream_map.stream_alias})
        else:
            out.append(message)
    return out


def comparable(messages: list[dict]) -> list[dict]:
    """The messages without what differs between two runs (versions, extraction times)."""
    kept = []
    for message in messages:
        message = {k: v for k, v in message.items() if k not in ("version", "time_extracted")}
        if message["type"] == "STATE":
            message = {"type": "STATE"}
        kept.append(message)
    return kept


MAPS = [
    {"stream_maps": {"public-customers": {"email": "md5(email)", "name": None}}},
    {
        "stream_maps": {
            "public-customers": {"__alias__": "clients", "id": "id", "label": "name + '!'", "__else__": None}
        }
    },
    {"stream_maps": {"public-customers": {"__filter__": "id % 3 == 0"}, "public-orders": None}},
    {
        "stream_maps": {
            "public-orders": {"__key_properties__": ["customer", "id"], "big": "total > config['threshold']"}
        },
        "stream_map_config": {"threshold": 10},
    },
    {"stream_maps": {"copy_of_orders": {"__source__": "public-orders"}}},
    {"stream_maps": {"__else__": None, "public-orders": {}}},
    {"flattening_enabled": True, "flattening_max_depth": 1},
]


@pytest.mark.parametrize("settings", MAPS, ids=range(len(MAPS)))
def test_mapped_output_is_what_singer_sdks_mapper_makes(db, catalog, plain, settings):
    mapped = db.sync(catalog, config=dict(db.config, **settings))
    full = {"stream_maps": {}, "stream_map_config": {}, "flattening_enabled": False, "flattening_max_depth": None}
    expected = sdk_mapped(json.loads(json.dumps(plain)), {**full, **settings})
    assert comparable(mapped) == comparable(expected)


def test_an_unmapped_stream_keeps_its_bytes(db, catalog):
    chosen = only(catalog, "public-orders")
    plain = db.sync(chosen)
    mapped = db.sync(chosen, config=dict(db.config, stream_maps={"public-customers": {"email": None}}))
    assert comparable(mapped) == comparable(plain)


def test_log_based_changes_of_a_mapped_stream_are_mapped(db, catalog):
    db.create_slot()
    chosen = only(catalog, "public-customers", "LOG_BASED")
    config = dict(
        db.config,
        stream_maps={"public-customers": {"email": "md5(email)", "name": None}},
        logical_poll_total_seconds=2,
    )
    first = db.sync(chosen, config=config)
    db.execute("UPDATE customers SET email = 'new@example.org', name = 'secret' WHERE id = 2")
    state = next(m["value"] for m in reversed(first) if m["type"] == "STATE")
    second = db.sync(chosen, state=state, config=config)
    changes = [m["record"] for m in second if m["type"] == "RECORD"]
    assert [record["id"] for record in changes] == [2]
    assert "name" not in changes[0] and changes[0]["email"] == hashlib.md5(b"new@example.org").hexdigest()
    schemas = [m["schema"]["properties"] for m in first + second if m["type"] == "SCHEMA"]
    assert schemas and all("name" not in properties for properties in schemas)


def test_a_stream_mapped_in_python_with_batch_config_goes_out_as_mapped_records(db, catalog, tmp_path):
    chosen = only(catalog, "public-customers")
    batch = {"encoding": {"format": "jsonl"}, "storage": {"root": tmp_path.as_uri()}}
    maps = {"public-customers": {"email": None, "__filter__": "id > 0"}}  # a filter: not one the server applies
    messages = db.sync(chosen, config=dict(db.config, batch_config=batch, stream_maps=maps))
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert len(records) == 30 and all("email" not in record for record in records)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "stream_maps",
    [{"__else__": "keep"}, {"__bogus__": {}}],
)
def test_a_wrong_stream_map_is_one_line_before_connecting(db, catalog, stream_maps):
    messages, stderr, code = db.try_sync(catalog, config=dict(db.config, stream_maps=stream_maps))
    assert code == 1 and messages == []
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1 and 'config key "stream_maps" is not a valid singer-sdk stream map' in errors[0], stderr


@pytest.mark.parametrize("definition", [{"id": None}, {"__else__": "keep"}], ids=["key dropped", "__else__ kept"])
def test_a_map_that_does_not_fit_a_stream_is_one_line(db, catalog, definition):
    chosen = only(catalog, "public-orders")
    messages, stderr, code = db.try_sync(chosen, config=dict(db.config, stream_maps={"public-orders": definition}))
    assert code == 1 and not any("Traceback" in line for line in stderr), stderr
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1 and "stream map of public-orders does not fit its schema" in errors[0], stderr


def test_a_failing_expression_is_one_line_naming_the_stream(db, catalog):
    chosen = only(catalog, "public-orders")
    messages, stderr, code = db.try_sync(
        chosen, config=dict(db.config, stream_maps={"public-orders": {"x": "no_such_name + 1"}})
    )
    assert code == 1
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1 and "stream map of public-orders failed on a record" in errors[0], stderr
    assert messages[-1]["type"] == "STATE" and not [m for m in messages if m["type"] == "RECORD"]


def test_an_expression_raising_on_a_value_is_one_line_naming_the_stream(db, catalog):
    db.execute("INSERT INTO orders VALUES (1000, NULL, NULL)")
    try:
        chosen = only(catalog, "public-orders")
        messages, stderr, code = db.try_sync(
            chosen, config=dict(db.config, stream_maps={"public-orders": {"h": "md5(total)"}})
        )
    finally:
        db.execute("DELETE FROM orders WHERE id = 1000")
    assert code == 1 and not any("Traceback" in line for line in stderr), stderr
    errors = [line for line in stderr if line.startswith("tap-postgres: error:")]
    assert len(errors) == 1 and "stream map of public-orders failed on a record" in errors[0], stderr
    assert messages[-1]["type"] == "STATE"

"""Settings: pipelinewise's keys, types given as JSON values or strings, and errors that name the key."""

from __future__ import annotations

import pytest

from tap_postgres.config import merge_config_files, parse_config
from tap_postgres.errors import ConfigError

BASE = {"host": "db", "user": "u", "dbname": "d"}


def test_defaults_are_pipelinewise_defaults():
    config = parse_config(BASE)
    assert (config.port, config.itersize, config.logical_poll_total_seconds, config.max_run_seconds) == (
        5432,
        20000,
        10800,
        43200,
    )
    assert config.break_at_end_lsn is True
    assert config.fast_sync_rds_add_metadata_columns is True
    assert config.fast_sync_rds_s3_prefix == ""


@pytest.mark.parametrize(("given", "expected"), [(True, True), ("true", True), ("False", False), (False, False)])
def test_booleans_may_be_strings(given, expected):
    assert parse_config(dict(BASE, use_secondary=given, secondary_host="r", secondary_port=1)).use_secondary is expected


def test_integers_may_be_strings():
    assert parse_config(dict(BASE, port="6543")).port == 6543


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"port": "abc"}, "config key \"port\" must be an integer, got 'abc'"),
        ({"ssl": "yes"}, "config key \"ssl\" must be true or false, got 'yes'"),
        (
            {"sslmode": "maybe"},
            'config key "sslmode" must be one of disable, allow, prefer, require, verify-ca, verify-full',
        ),
        ({"default_replication_method": "FULL"}, 'config key "default_replication_method" must be one of'),
        ({"fast_sync_rds": True}, 'config key "fast_sync_rds" is true but "fast_sync_rds_s3_bucket" and'),
        ({"itersize": 0}, 'config key "itersize" must be at least 1, got 0'),
        ({"lock_timeout": "-1"}, 'config key "lock_timeout" must be 0 (wait for ever) or more, got -1'),
    ],
)
def test_bad_values_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(dict(BASE, **extra))


def test_ssl_true_means_sslmode_require_unless_sslmode_is_given():
    assert parse_config(dict(BASE, ssl="true")).effective_sslmode == "require"
    assert parse_config(dict(BASE, ssl=True, sslmode="verify-full")).effective_sslmode == "verify-full"
    assert parse_config(BASE).effective_sslmode is None


def test_filter_schemas_is_split_and_trimmed():
    assert parse_config(dict(BASE, filter_schemas=" public, sales ,")).schemas == ["public", "sales"]


def test_environment_variables_fill_what_the_config_files_leave_out(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"host": "db", "user": "u", "dbname": "d", "port": 6000}')
    environ = {"TAP_POSTGRES_PASSWORD": "from-env", "TAP_POSTGRES_PORT": "7000", "TAP_POSTGRES_ITERSIZE": "5"}
    config = parse_config(merge_config_files([str(path)], environ))
    # the file wins where it sets a key: an existing config keeps its meaning
    assert (config.password, config.port, config.itersize) == ("from-env", 6000, 5)


def test_config_env_reads_every_setting_from_the_environment():
    environ = {"TAP_POSTGRES_HOST": "db", "TAP_POSTGRES_USER": "u", "TAP_POSTGRES_DBNAME": "d"}
    assert parse_config(merge_config_files(["ENV"], environ)).host == "db"


def test_a_secret_of_the_wrong_type_is_not_shown():
    with pytest.raises(ConfigError) as failure:
        parse_config(dict(BASE, password=123456789))
    assert str(failure.value) == 'config key "password" must be a string, got a value that is hidden'


def test_a_nul_character_is_one_line_naming_the_key_not_the_value():
    with pytest.raises(ConfigError) as failure:
        parse_config(dict(BASE, password="pass\x00word"))
    assert str(failure.value) == 'config key "password" holds a NUL character, which libpq cannot send: remove it'


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("faker_config", {"locale": "en_US"}),
    ],
)
def test_singer_sdk_features_the_tap_does_not_implement_stop_the_run(key, value):
    # a stream map that drops a PII column must never be ignored silently
    with pytest.raises(ConfigError, match=f'config key "{key}" is a singer-sdk feature this tap does not implement'):
        parse_config(dict(BASE, **{key: value}))


@pytest.mark.parametrize(("key", "value"), [("stream_maps", {}), ("flattening_enabled", False), ("batch_config", None)])
def test_singer_sdk_features_that_ask_for_nothing_pass(key, value):
    assert parse_config(dict(BASE, **{key: value})).host == "db"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("pasword", '"password"'), ("filter_schema", '"filter_schemas"'), ("dbnmae", '"dbname"')],
)
def test_an_unknown_key_warns_once_naming_the_nearest_setting(key, suggestion, caplog):
    parse_config(dict(BASE, **{key: "x"}))
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f'config key "{key}" is not a setting of tap-postgres and is ignored: did you mean {suggestion}?'
    ]


def test_keys_pipelinewise_writes_into_tap_configs_stay_silent(caplog):
    # PipelineWise adds tap_id and its generic db_conn keys to every tap's config.json
    parse_config(dict(BASE, tap_id="pipe", engine="postgres", fastsync_parallelism=4, limit=10, use_gtid=False))
    # older PipelineWise added filter_dbs; FastSync from PostgreSQL reads the replica_* keys of db_conn
    parse_config(
        dict(BASE, filter_dbs="d", replica_host="r", replica_port=5433, replica_user="u", replica_password="x")
    )
    assert [record for record in caplog.records if record.levelname == "WARNING"] == []

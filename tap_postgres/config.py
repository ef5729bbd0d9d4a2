"""The tap's settings: pipelinewise-tap-postgres keys, their defaults, and validation into a `Config`."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tap_postgres import files
from tap_postgres.errors import ConfigError, keep_secret

if TYPE_CHECKING:
    from tap_postgres.batch import BatchSettings

LOGGER = logging.getLogger("tap-postgres")

REPLICATION_METHODS = ("FULL_TABLE", "INCREMENTAL", "LOG_BASED")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# JSON Schema types of a setting. PipelineWise writes booleans and numbers as strings
# ("true", "5432") as often as native JSON values, so both are accepted.
_BOOLEAN = {"type": ["boolean", "string"]}
_INTEGER = {"type": ["integer", "string"]}
_STRING = {"type": ["string"]}
_OBJECT = {"type": ["object"]}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One config key: its name, JSON type, default and meaning."""

    name: str
    kind: str  # "string", "integer", "boolean" or "object"
    description: str
    default: Any = None
    required: bool = False
    secret: bool = False
    allowed: tuple[str, ...] | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "string", "PostgreSQL host name or address.", required=True),
    Setting("port", "integer", "PostgreSQL port.", default=5432),
    Setting("user", "string", "PostgreSQL user.", required=True),
    Setting("password", "string", "PostgreSQL password.", secret=True),
    Setting("dbname", "string", "Database to discover and sync.", required=True),
    Setting(
        "filter_schemas",
        "string",
        "Comma separated schema names: discover only these schemas. Default: every schema.",
    ),
    Setting(
        "schema_include_pattern",
        "string",
        "Discover only schemas whose name matches this PostgreSQL regular expression (`~`). Default: every schema.",
    ),
    Setting(
        "schema_exclude_pattern",
        "string",
        "Leave out schemas whose name matches this PostgreSQL regular expression.",
    ),
    Setting(
        "table_include_pattern",
        "string",
        "Discover only tables and views whose qualified name `schema.table` matches this PostgreSQL regular "
        "expression. Default: every table.",
    ),
    Setting(
        "table_exclude_pattern",
        "string",
        "Leave out tables and views whose qualified name `schema.table` matches this PostgreSQL regular expression.",
    ),
    Setting(
        "database_include_pattern",
        "string",
        "Catalog streams: read only the databases whose name matches this PostgreSQL regular expression.",
    ),
    Setting(
        "database_exclude_pattern",
        "string",
        "Catalog streams: leave out the databases whose name matches this PostgreSQL regular expression.",
    ),
    Setting(
        "include_tables",
        "boolean",
        "Discover tables (ordinary, partitioned and foreign); false leaves them out.",
        default=True,
    ),
    Setting(
        "include_views",
        "boolean",
        "Discover views and materialized views; false leaves them out.",
        default=True,
    ),
    Setting(
        "include_partitions",
        "boolean",
        "Discover each leaf partition as a stream of its own; the partitioned parent is always one.",
        default=False,
    ),
    Setting(
        "metadata_streams",
        "boolean",
        "Discover the catalog streams (pg_metadata-*: databases, schemas, relations, columns, constraints, "
        "indexes, sequences, types, functions, roles, role_memberships, grants, policies, lineage, "
        "column_statistics, statement_usage) besides the tables' row streams.",
        default=False,
    ),
    Setting(
        "metadata_only",
        "boolean",
        "Discover and sync the catalog streams only, no table's rows (implies metadata_streams).",
        default=False,
    ),
    Setting(
        "metadata_databases",
        "string",
        "Catalog streams: comma separated databases to read, or `*` for every database the user may "
        "connect to (templates excluded), filtered by the database patterns. Default: dbname.",
    ),
    Setting(
        "metadata_sql_text",
        "string",
        "Catalog streams: `keep` view definitions, function bodies and statement texts, replace them by "
        "their keyed `hash` (HMAC-SHA256 with metadata_hash_key, hex), or `drop` them (null).",
        default="keep",
        allowed=("keep", "hash", "drop"),
    ),
    Setting(
        "metadata_hash_key",
        "string",
        "metadata_sql_text hash: the HMAC key; the same key gives the same hash for the same text.",
        secret=True,
    ),
    Setting("ssl", "boolean", 'Connect with SSL (sslmode "require") when true.', default=False),
    Setting(
        "sslmode",
        "string",
        "libpq sslmode; overrides `ssl` when set.",
        allowed=SSL_MODES,
    ),
    Setting("sslrootcert", "string", "Path of the CA certificate that verifies the server."),
    Setting("sslcert", "string", "Path of the client certificate."),
    Setting("sslkey", "string", "Path of the client certificate's private key.", secret=True),
    Setting(
        "connect_timeout",
        "integer",
        "Seconds to wait for a connection before giving up.",
        default=10,
    ),
    Setting(
        "application_name",
        "string",
        "application_name reported to the server (pg_stat_activity).",
        default="tap-postgres",
    ),
    Setting(
        "logical_poll_total_seconds",
        "integer",
        "LOG_BASED: stop when no change has arrived from the WAL for this many seconds.",
        default=10800,
    ),
    Setting(
        "break_at_end_lsn",
        "boolean",
        "LOG_BASED: stop at the WAL position that was current when the run started.",
        default=True,
    ),
    Setting(
        "max_run_seconds",
        "integer",
        "LOG_BASED: stop streaming after this many seconds.",
        default=43200,
    ),
    Setting(
        "output_plugin",
        "string",
        "LOG_BASED: the logical decoding plugin, wal2json or pgoutput. Unset: the existing slot's plugin, "
        "and wal2json for a new slot (as pipelinewise creates it).",
        allowed=("wal2json", "pgoutput"),
    ),
    Setting(
        "publication_name",
        "string",
        "LOG_BASED with pgoutput: the publication holding the selected LOG_BASED tables. Default: the slot's name.",
    ),
    Setting(
        "state_poll_seconds",
        "integer",
        "LOG_BASED: how often to re-read the --state file during the run and confirm the slot up to the "
        "lowest lsn it holds (what the target has saved), so the server frees WAL while the run goes on.",
        default=10,
    ),
    Setting(
        "progress_seconds",
        "integer",
        "How often a stream logs its progress: records so far, the rate, and for a copy the percentage of the "
        "table's estimated rows and the time left; for LOG_BASED, how far behind the end of the WAL it reads. "
        "0 logs after every batch.",
        default=5,
    ),
    Setting(
        "lock_timeout",
        "integer",
        "Seconds a statement of the tap waits for a lock another session holds on a table (an ALTER TABLE, "
        "VACUUM FULL or LOCK TABLE) before the run stops with one line naming the table and that session; "
        "while it waits, a line every progress_seconds names them. 0 waits for ever, as PostgreSQL does.",
        default=300,
    ),
    Setting(
        "slot_lag_warning_bytes",
        "integer",
        "LOG_BASED: warn (`slot_lag_exceeded slot=... lag_bytes=... threshold_bytes=...`) when the slot holds "
        "more than this many bytes of WAL on the server. Every run logs `slot_health when=start|end slot=... "
        "lag_bytes=... wal_status=... safe_wal_size=... confirmed_flush_lsn=...` either way.",
    ),
    Setting(
        "render_changes_in_tap",
        "boolean",
        "LOG_BASED: render the whole-row inserts and updates of a stream whose every column is an "
        "integer, numeric, float, boolean, text-like, uuid, enum, jsonb, network address, text search, date, "
        "timestamp or interval in the tap, with the server's bytes, "
        "instead of sending them back to the primary to render. false: the server renders every change, which "
        "costs the primary about as much CPU again as decoding and the tap less (faster where both have cores "
        "to spare).",
        default=True,
    ),
    Setting(
        "debug_lsn",
        "boolean",
        "LOG_BASED: add an `_sdc_lsn` property with the change's WAL position to each record.",
        default=False,
    ),
    Setting(
        "tap_id",
        "string",
        "ID of the pipeline; used in the replication slot name pipelinewise_<dbname>_<tap_id>.",
    ),
    Setting(
        "create_replication_slot",
        "boolean",
        "LOG_BASED: create the replication slot (wal2json) when it does not exist, instead of failing.",
        default=False,
    ),
    Setting(
        "slot_failover",
        "boolean",
        "LOG_BASED, PostgreSQL 17+: make the replication slot a failover slot, which standbys with "
        "sync_replication_slots keep in step so it survives a switchover; the tap creates it so, or turns an "
        "existing slot into one before reading it.",
        default=False,
    ),
    Setting(
        "itersize",
        "integer",
        "Rows per batch in FULL_TABLE and INCREMENTAL: a STATE message follows every batch.",
        default=20000,
    ),
    Setting(
        "full_table_sessions",
        "integer",
        "Sessions that copy a FULL_TABLE table's block ranges in parallel, all on one snapshot (1: one session).",
        default=2,
    ),
    Setting(
        "max_value_bytes",
        "integer",
        "Emit null, with a warning naming the stream, column and key, for a value whose text is longer than "
        "this many bytes (bytea: its hex), under every method; key columns are never nulled. Unset: every "
        "value is emitted, and one the server cannot render (a record over 1 GB of JSON) stops the run "
        "with one line naming it.",
    ),
    Setting(
        "default_replication_method",
        "string",
        "Replication method of streams whose catalog metadata names none.",
        allowed=REPLICATION_METHODS,
    ),
    Setting(
        "use_secondary",
        "boolean",
        "Read FULL_TABLE and INCREMENTAL streams from the replica at secondary_host.",
        default=False,
    ),
    Setting("secondary_host", "string", "Replica host; required when use_secondary is true."),
    Setting("secondary_port", "integer", "Replica port; required when use_secondary is true."),
    Setting(
        "limit",
        "integer",
        "INCREMENTAL: emit at most about this many rows per stream and run "
        "(all rows sharing the last replication key value are included).",
    ),
    Setting(
        "fast_sync_rds",
        "boolean",
        "Export FULL_TABLE and INCREMENTAL streams to S3 with aws_s3.query_export_to_s3 (RDS/Aurora).",
        default=False,
    ),
    Setting("fast_sync_rds_s3_bucket", "string", "fast_sync_rds: S3 bucket of the exports."),
    Setting("fast_sync_rds_s3_prefix", "string", "fast_sync_rds: key prefix of the exports.", default=""),
    Setting("fast_sync_rds_s3_region", "string", "fast_sync_rds: AWS region of the bucket."),
    Setting(
        "fast_sync_rds_add_metadata_columns",
        "boolean",
        "fast_sync_rds: add _SDC_BATCHED_AT, _SDC_DELETED_AT and _SDC_EXTRACTED_AT columns.",
        default=True,
    ),
    Setting(
        "batch_config",
        "object",
        "Write FULL_TABLE, INCREMENTAL and the LOG_BASED initial copy into JSON Lines files announced by "
        'singer-sdk BATCH messages, instead of RECORD messages: {"encoding": {"format": "jsonl", '
        '"compression": "gzip" or "none"}, "storage": {"root": "file://DIR" or "s3://BUCKET/PATH", '
        '"prefix": "..."}, "batch_size": records per file (default 10000)}. LOG_BASED changes stay RECORDs.',
    ),
    Setting(
        "stream_maps",
        "object",
        "singer-sdk stream maps, by stream id: aliases (__alias__), removed (null) and computed properties "
        "(md5(), expressions), __filter__, __else__, __key_properties__, __source__.",
    ),
    Setting("stream_map_config", "object", "User-defined values the stream map expressions read (config)."),
    Setting(
        "flattening_enabled",
        "boolean",
        "Flatten nested object properties into top-level ones (singer-sdk schema flattening).",
        default=False,
    ),
    Setting("flattening_max_depth", "integer", "How many levels of nested objects flattening expands."),
)

_JSON_TYPES = {"string": _STRING, "integer": _INTEGER, "boolean": _BOOLEAN, "object": _OBJECT}


def config_jsonschema() -> dict:
    """Return the JSON Schema of the settings, in the form singer-sdk publishes with --about."""
    properties = {}
    for setting in SETTINGS:
        schema = {"type": list(_JSON_TYPES[setting.kind]["type"]) + ([] if setting.required else ["null"])}
        if setting.allowed:
            schema["enum"] = list(setting.allowed)
        if setting.default is not None:
            schema["default"] = setting.default
        schema["description"] = setting.description
        if setting.secret:
            schema.update(secret=True, writeOnly=True)
        properties[setting.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": [setting.name for setting in SETTINGS if setting.required],
        "$schema": "https://json-schema.org/draft/2020-12/schema",
    }


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated settings, with defaults applied and strings coerced to their types."""

    host: str
    user: str
    dbname: str
    port: int = 5432
    password: str | None = None
    filter_schemas: str | None = None
    include_partitions: bool = False
    schema_include_pattern: str | None = None
    schema_exclude_pattern: str | None = None
    table_include_pattern: str | None = None
    table_exclude_pattern: str | None = None
    database_include_pattern: str | None = None
    database_exclude_pattern: str | None = None
    include_tables: bool = True
    include_views: bool = True
    metadata_streams: bool = False
    metadata_only: bool = False
    metadata_databases: str | None = None
    metadata_sql_text: str = "keep"
    metadata_hash_key: str | None = None
    ssl: bool = False
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: int = 10
    application_name: str = "tap-postgres"
    logical_poll_total_seconds: int = 10800
    break_at_end_lsn: bool = True
    max_run_seconds: int = 43200
    output_plugin: str | None = None
    publication_name: str | None = None
    state_poll_seconds: int = 10
    progress_seconds: int = 5
    lock_timeout: int = 300
    slot_lag_warning_bytes: int | None = None
    render_changes_in_tap: bool = True
    debug_lsn: bool = False
    tap_id: str | None = None
    create_replication_slot: bool = False
    slot_failover: bool = False
    itersize: int = 20000
    full_table_sessions: int = 2
    max_value_bytes: int | None = None
    default_replication_method: str | None = None
    use_secondary: bool = False
    secondary_host: str | None = None
    secondary_port: int | None = None
    limit: int | None = None
    fast_sync_rds: bool = False
    fast_sync_rds_s3_bucket: str | None = None
    fast_sync_rds_s3_prefix: str = ""
    fast_sync_rds_s3_region: str | None = None
    fast_sync_rds_add_metadata_columns: bool = True
    batch_config: dict | None = None
    stream_maps: dict | None = None
    stream_map_config: dict | None = None
    flattening_enabled: bool = False
    flattening_max_depth: int | None = None

    @property
    def batch(self) -> BatchSettings | None:
        """The BATCH settings, or None when records go out as RECORD messages."""
        from tap_postgres.batch import BatchSettings  # gzip and the file machinery: not for --about

        return BatchSettings.parse(self.batch_config) if self.batch_config else None

    @property
    def schemas(self) -> list[str]:
        """The schema names of `filter_schemas`, or an empty list for every schema."""
        if not self.filter_schemas:
            return []
        return [name.strip() for name in self.filter_schemas.split(",") if name.strip()]

    @property
    def with_metadata(self) -> bool:
        """Tell whether the catalog streams are discovered (metadata_streams or metadata_only)."""
        return self.metadata_streams or self.metadata_only

    @property
    def effective_sslmode(self) -> str | None:
        """The libpq sslmode: `sslmode` if given, "require" when `ssl` is true, else libpq's default."""
        if self.sslmode:
            return self.sslmode
        return "require" if self.ssl else None


def _coerce(setting: Setting, value: Any) -> Any:
    """Return `value` as the setting's type, or raise ConfigError naming the key (never a secret's value)."""
    if value is None:
        return None
    shown = "a value that is hidden" if setting.secret else repr(value)
    if setting.kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f'config key "{setting.name}" must be true or false, got {shown}')
    if setting.kind == "integer":
        if isinstance(value, bool):
            raise ConfigError(f'config key "{setting.name}" must be an integer, got {shown}')
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f'config key "{setting.name}" must be an integer, got {shown}')
    if setting.kind == "object":
        if isinstance(value, str):  # from TAP_POSTGRES_<KEY>: JSON text
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f'config key "{setting.name}" must be a JSON object, got {shown}') from None
        if not isinstance(value, dict):
            raise ConfigError(f'config key "{setting.name}" must be a JSON object, got {shown}')
        return value
    if not isinstance(value, str):
        raise ConfigError(f'config key "{setting.name}" must be a string, got {shown}')
    if "\x00" in value:
        raise ConfigError(f'config key "{setting.name}" holds a NUL character, which libpq cannot send: remove it')
    if setting.allowed and value not in setting.allowed:
        raise ConfigError(f'config key "{setting.name}" must be one of {", ".join(setting.allowed)}, got {shown}')
    return value


# Keys PipelineWise writes into a tap's config.json besides the tap's own settings: `tap_id` and the
# older `filter_dbs` of its tap_config_extras, and the `db_conn` keys its FastSync and other taps read.
PIPELINEWISE_KEYS = frozenset(
    {"engine", "filter_dbs", "fastsync_parallelism", "use_gtid", "use_message_key"}
    | {"replica_host", "replica_port", "replica_user", "replica_password"}
)

# singer-sdk settings this tap does not implement: records are written from the server's bytes, not
# through singer-sdk's record path. Each stops the run when it asks for something, because a map meant
# to drop a column (PII) must never be ignored; an empty or false value asks for nothing.
SDK_KEYS_NOT_IMPLEMENTED = ("faker_config",)


def check_keys(raw: Mapping[str, Any]) -> None:
    """Refuse singer-sdk settings the tap does not implement; warn once for each unknown key."""
    for key in SDK_KEYS_NOT_IMPLEMENTED:
        if raw.get(key) not in (None, False, {}, [], ""):
            raise ConfigError(
                f'config key "{key}" is a singer-sdk feature this tap does not implement yet, so it would be '
                "ignored: remove it, and apply the mapping with a mapper between tap and target "
                "(for example meltano-map-transform), or deselect the columns in the catalog"
            )
    known = [setting.name for setting in SETTINGS]
    for key in raw:
        if key in known or key in PIPELINEWISE_KEYS or key in SDK_KEYS_NOT_IMPLEMENTED:
            continue
        nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f': did you mean "{nearest[0]}"?' if nearest else ": the tap has no such setting (see --about)"
        LOGGER.warning('config key "%s" is not a setting of tap-postgres and is ignored%s', key, hint)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a config dict into a Config: unknown keys warn, unimplemented singer-sdk features stop."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a JSON object of settings")
    check_keys(raw)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = _coerce(setting, raw.get(setting.name))
        if value is None or (setting.required and value == ""):
            if setting.required:
                raise ConfigError(
                    f'config key "{setting.name}" is missing: add it to the config file or set '
                    f"{ENV_PREFIX}{setting.name.upper()} ({setting.description})"
                )
            continue
        if setting.secret:
            keep_secret(setting.name, value)
        values[setting.name] = value
    config = Config(**values)
    _check_combinations(config)
    return config


def _check_combinations(config: Config) -> None:
    """Raise ConfigError for settings that only make sense together."""
    if config.use_secondary and not (config.secondary_host and config.secondary_port):
        raise ConfigError(
            'config key "use_secondary" is true but "secondary_host" and "secondary_port" '
            "are not both set: add them or set use_secondary to false"
        )
    if config.fast_sync_rds and not (config.fast_sync_rds_s3_bucket and config.fast_sync_rds_s3_region):
        raise ConfigError(
            'config key "fast_sync_rds" is true but "fast_sync_rds_s3_bucket" and '
            '"fast_sync_rds_s3_region" are not both set: add them or set fast_sync_rds to false'
        )
    if config.metadata_sql_text == "hash" and not config.metadata_hash_key:
        raise ConfigError(
            'config key "metadata_sql_text" is "hash" but "metadata_hash_key" is not set: set the HMAC key, '
            'or set metadata_sql_text to "drop"'
        )
    if config.batch_config is not None:
        config.batch  # noqa: B018 -- parsed now, so a wrong batch_config stops the run before it connects
        if config.fast_sync_rds:
            raise ConfigError(
                'config keys "batch_config" and "fast_sync_rds" both ask how to export rows: set only one'
            )
    if config.stream_maps or config.flattening_enabled:
        if config.fast_sync_rds:
            raise ConfigError(
                'config key "fast_sync_rds" exports rows to S3 without the tap: the "stream_maps" and '
                '"flattening_enabled" settings cannot apply to them; set fast_sync_rds to false'
            )
        from tap_postgres.mapping import check_mapping  # singer-sdk's mapper: only when maps are set

        check_mapping(config)
    if config.itersize < 1:
        raise ConfigError(f'config key "itersize" must be at least 1, got {config.itersize}')
    if config.full_table_sessions < 1:
        raise ConfigError(f'config key "full_table_sessions" must be at least 1, got {config.full_table_sessions}')
    if config.state_poll_seconds < 1:
        raise ConfigError(f'config key "state_poll_seconds" must be at least 1, got {config.state_poll_seconds}')
    if config.progress_seconds < 0:
        raise ConfigError(f'config key "progress_seconds" must be 0 or more, got {config.progress_seconds}')
    if config.lock_timeout < 0:
        raise ConfigError(f'config key "lock_timeout" must be 0 (wait for ever) or more, got {config.lock_timeout}')
    if config.slot_lag_warning_bytes is not None and config.slot_lag_warning_bytes < 0:
        raise ConfigError(f'config key "slot_lag_warning_bytes" must be 0 or more, got {config.slot_lag_warning_bytes}')
    if config.max_value_bytes is not None and config.max_value_bytes < 1:
        raise ConfigError(f'config key "max_value_bytes" must be at least 1, got {config.max_value_bytes}')
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f'config key "limit" must be at least 1, got {config.limit}')


def read_json_file(path: str | Path, what: str, error: type[Exception] = ConfigError, **json_options: Any) -> Any:
    """Load a JSON file safely (files.read_json), raising `error` with its one-line reason."""
    try:
        return files.read_json(str(path), what, **json_options)
    except files.FileProblem as exc:
        raise error(str(exc)) from None


# The prefix of the environment variables that set what the config files leave out (`--about` lists them).
ENV_PREFIX = "TAP_POSTGRES_"
# `--config ENV`, as singer-sdk spells it: no file, settings from the environment only.
ENV_CONFIG = "ENV"


def merge_config_files(paths: tuple[str, ...] | list[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read each config file in turn (a key in a later file wins), then fill the keys none of them sets
    from `TAP_POSTGRES_<KEY>` environment variables, so a secret need not be written to a file.

    The files win over the environment: a key an existing config sets keeps its meaning.
    """
    merged: dict[str, Any] = {}
    for path in paths:
        if path == ENV_CONFIG:
            continue
        content = read_json_file(path, "config")
        if not isinstance(content, dict):
            raise ConfigError(f"the config file {path} must hold a JSON object of settings")
        merged.update(content)
    environ = os.environ if environ is None else environ
    for setting in SETTINGS:
        variable = ENV_PREFIX + setting.name.upper()
        if merged.get(setting.name) is None and variable in environ:
            merged[setting.name] = environ[variable]
    return merged

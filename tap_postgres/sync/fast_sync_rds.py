"""fast_sync_rds: RDS/Aurora exports the stream's rows to S3 itself (aws_s3.query_export_to_s3).

No RECORD goes through the tap: it builds the export query, runs the export, checks with boto3
that the objects it reports exist with the reported sizes, and emits one FAST_SYNC_RDS_S3_INFO
message that the target (pipelinewise-target-redshift's fast sync) loads with COPY. The same facts
are kept in the stream's bookmark (`fast_sync_rds_s3_info`), so a mapper that drops unknown
message types cannot lose them.
"""

from __future__ import annotations

import datetime
import logging
import secrets

import psycopg2
from psycopg2 import extensions, sql

from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.discovery import Column
from tap_postgres.errors import TapPostgresError
from tap_postgres.output import MessageWriter
from tap_postgres.state import bookmark
from tap_postgres.sync.full_table import new_version
from tap_postgres.sync.incremental import last_key
from tap_postgres.sync.rows import EVERY_ROW, begin_snapshot, column_ref, key_tuple, key_values, table_source

LOGGER = logging.getLogger("tap-postgres")

METADATA_COLUMNS = ("_SDC_BATCHED_AT", "_SDC_DELETED_AT", "_SDC_EXTRACTED_AT")


class FastSyncError(TapPostgresError):
    """Raised when the aws_s3 export cannot run or what it wrote does not match what it reported."""


def sync_fast_rds(
    conn: extensions.connection,
    stream: SelectedStream,
    columns: list[Column],
    state: dict,
    writer: MessageWriter,
    config: Config,
) -> None:
    """Export the stream to S3 and emit FAST_SYNC_RDS_S3_INFO, ACTIVATE_VERSION and STATE."""
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    version = stream_bookmark.get("version") if stream.replication_method == "INCREMENTAL" else None
    version = version or new_version()
    extracted_at = datetime.datetime.now(datetime.timezone.utc)
    s3_path = export_path(config.fast_sync_rds_s3_prefix, stream.tap_stream_id, extracted_at)

    begin_snapshot(conn)
    with conn.cursor() as cur:
        require_aws_s3(cur)
        where, new_bookmark = _incremental_condition(cur, stream, columns, stream_bookmark)
        query = export_query(stream, columns, where, extracted_at, config.fast_sync_rds_add_metadata_columns)
        LOGGER.info("%s: exporting to s3://%s/%s", stream.tap_stream_id, config.fast_sync_rds_s3_bucket, s3_path)
        try:
            cur.execute(
                "SELECT rows_uploaded, files_uploaded, bytes_uploaded FROM aws_s3.query_export_to_s3("
                "%s, aws_commons.create_s3_uri(%s, %s, %s), 'format csv')",
                (query.as_string(conn), config.fast_sync_rds_s3_bucket, s3_path, config.fast_sync_rds_s3_region),
            )
        except psycopg2.Error as exc:
            message = (exc.pgerror or str(exc)).strip().splitlines()[0]
            raise FastSyncError(
                f"export of {stream.tap_stream_id} to s3://{config.fast_sync_rds_s3_bucket}/{s3_path} failed: {message}"
            ) from None
        rows, files, size = cur.fetchone()
    conn.commit()
    check_uploaded_objects(config, s3_path, files, size)

    info = {
        "stream": stream.tap_stream_id,
        "s3_bucket": config.fast_sync_rds_s3_bucket,
        "s3_path": s3_path,
        "s3_region": config.fast_sync_rds_s3_region,
        "rows_uploaded": rows,
        "files_uploaded": files,
        "bytes_uploaded": size,
        "version": version,
        "time_extracted": extracted_at.isoformat(),
        "replication_method": stream.replication_method,
    }
    writer.write_message({"type": "FAST_SYNC_RDS_S3_INFO", **info})
    stream_bookmark["version"] = version
    stream_bookmark["fast_sync_rds_s3_info"] = info
    if new_bookmark is not None:
        stream_bookmark["replication_key"] = stream.replication_key
        stream_bookmark["replication_key_value"] = new_bookmark
    writer.write_activate_version(stream.tap_stream_id, version)
    writer.write_state(state)
    LOGGER.info("%s: %d rows in %d file(s), %d bytes exported", stream.tap_stream_id, rows, files, size)


def export_path(prefix: str, stream_id: str, extracted_at: datetime.datetime) -> str:
    """Return `{prefix}/{schema}-{table}/{YYYY-mm-dd-HHMMSS}_{8 hex}.csv`."""
    name = f"{stream_id}/{extracted_at:%Y-%m-%d-%H%M%S}_{secrets.token_hex(4)}.csv"
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def require_aws_s3(cur) -> None:
    """Raise FastSyncError unless aws_s3.query_export_to_s3 and aws_commons.create_s3_uri exist."""
    cur.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE (n.nspname, p.proname) IN (('aws_s3', 'query_export_to_s3'), ('aws_commons', 'create_s3_uri'))"
    )
    if cur.fetchone()[0] < 2:
        raise FastSyncError(
            "fast_sync_rds needs the aws_s3 extension, which only RDS and Aurora PostgreSQL have: "
            "run CREATE EXTENSION aws_s3 CASCADE there, or set fast_sync_rds to false"
        )


def export_query(
    stream: SelectedStream, columns: list[Column], where: sql.Composable, extracted_at, add_metadata: bool
) -> sql.Composed:
    """Return the SELECT whose rows are exported: arrays as JSON, then the metadata columns if asked."""
    selected = [
        sql.SQL("array_to_json({}) AS {}" if column.type.is_array else "{} AS {}").format(
            column_ref(column), sql.Identifier(column.name)
        )
        for column in columns
    ]
    if add_metadata:
        now = sql.Literal(extracted_at.isoformat())
        selected += [
            sql.SQL("{}::timestamptz AS {}").format(now, sql.Identifier("_SDC_BATCHED_AT")),
            sql.SQL("NULL::timestamptz AS {}").format(sql.Identifier("_SDC_DELETED_AT")),
            sql.SQL("{}::timestamptz AS {}").format(now, sql.Identifier("_SDC_EXTRACTED_AT")),
        ]
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(", ").join(selected), table_source(stream), where)


def _incremental_condition(cur, stream: SelectedStream, columns: list[Column], stream_bookmark: dict):
    """For INCREMENTAL, return (key >= bookmark, MAX(key) taken now); for FULL_TABLE (every row, None)."""
    if stream.replication_method != "INCREMENTAL":
        return EVERY_ROW, None
    key_column = next(column for column in columns if column.name == stream.replication_key)
    start = stream_bookmark.get("replication_key_value")
    where = (
        EVERY_ROW
        if start is None
        else sql.SQL("{} >= {}").format(key_tuple([key_column]), key_values([key_column], [start]))
    )
    # The new bookmark is read before the export, so rows written while it runs are exported next time.
    newest = last_key(cur, stream, key_column, sql.SQL("{} IS NOT NULL").format(column_ref(key_column)))
    return where, start if newest is None else newest


def check_uploaded_objects(config: Config, s3_path: str, files: int, size: int) -> None:
    """Raise FastSyncError unless S3 holds `path`, `path_part2`, ... with `size` bytes in all."""
    import boto3  # a tenth of a second to import: only runs that export need it

    client = boto3.client("s3", region_name=config.fast_sync_rds_s3_region)
    listed = client.list_objects_v2(Bucket=config.fast_sync_rds_s3_bucket, Prefix=s3_path).get("Contents", [])
    expected = {s3_path} | {f"{s3_path}_part{number}" for number in range(2, files + 1)}
    found = {item["Key"]: item["Size"] for item in listed if item["Key"] in expected}
    if files and (set(found) != expected or sum(found.values()) != size):
        raise FastSyncError(
            f"the export reported {files} file(s) of {size} bytes at s3://{config.fast_sync_rds_s3_bucket}/{s3_path} "
            f"but S3 lists {len(found)} of {sum(found.values())} bytes: check the bucket and rerun"
        )

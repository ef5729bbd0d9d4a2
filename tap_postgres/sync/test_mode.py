"""`--test` and `--test=schema`, as singer-sdk taps run them: one record (or only the SCHEMA) of each stream.

The streams are the catalog's selected ones, or with no catalog every discovered stream. Nothing
else is written: no STATE (no bookmark moves), no ACTIVATE_VERSION, no slot or publication is touched.
"""

from __future__ import annotations

import copy

from psycopg2 import sql

from tap_postgres import catalog as catalog_module
from tap_postgres import discovery
from tap_postgres.config import Config
from tap_postgres.connection import connect
from tap_postgres.output import MessageWriter, now_extracted
from tap_postgres.sync.rows import begin_snapshot, copy_records, rendered_columns, selected_columns, table_source


def run_test(config: Config, raw_catalog: dict | None, writer: MessageWriter, schema_only: bool) -> None:
    """Write each stream's SCHEMA and, unless `schema_only`, its first record."""
    with connect(config) as conn:
        if raw_catalog is None:
            raw_catalog = _every_stream_selected(discovery.discover_catalog(conn, config))
        streams = catalog_module.parse_catalog(raw_catalog, config)
        tables = discovery.describe_stream_tables(conn, streams)
        begin_snapshot(conn)
        with conn.cursor() as cur:
            for stream in streams:
                table = tables.get((stream.schema_name, stream.table_name))
                if table is None:
                    continue  # gone since the catalog was made: a test writes what it can
                columns = selected_columns(table, stream)
                writer.write_schema(stream.tap_stream_id, stream.schema, stream.key_properties)
                if schema_only or not table.populated:
                    continue
                first_row = sql.SQL("SELECT {} FROM {} LIMIT 1").format(rendered_columns(columns), table_source(stream))
                envelope = writer.envelope(stream.tap_stream_id, None, now_extracted())
                cur.copy_expert(copy_records(envelope, first_row), _LineWriter(writer))
        conn.rollback()


class _LineWriter:
    """What COPY writes into: each line straight to the writer."""

    def __init__(self, writer: MessageWriter):
        self.write = writer.write_lines


def _every_stream_selected(catalog: dict) -> dict:
    """The discovered catalog with every stream selected for FULL_TABLE."""
    chosen = copy.deepcopy(catalog)
    for entry in chosen["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"].update({"selected": True, "replication-method": "FULL_TABLE"})
    return chosen

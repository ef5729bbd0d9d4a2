"""The catalog the user passed: which streams are selected, how each replicates, which columns it emits."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tap_postgres.config import REPLICATION_METHODS, Config
from tap_postgres.errors import CatalogError

LOGGER = logging.getLogger("tap-postgres")

# the properties the tap adds to LOG_BASED records: the commit time of a delete, and with debug_lsn the WAL position
DELETED_AT = "_sdc_deleted_at"
LSN = "_sdc_lsn"


@dataclasses.dataclass(frozen=True)
class SelectedStream:
    """One selected stream, as the catalog asks for it to be synced."""

    tap_stream_id: str
    schema_name: str
    table_name: str
    is_view: bool
    replication_method: str
    replication_key: str | None
    key_properties: list[str]
    columns: list[str]  # the columns to query and emit, in catalog order
    schema: dict  # the catalog's JSON schema, reduced to `columns`
    metadata: dict  # table-level metadata as given
    # every column the catalog names, selected or not: a column LOG_BASED finds in a change is new
    # (and emitted) only when the catalog does not know it, so a deselected column stays out
    catalog_columns: frozenset[str] = frozenset()


def parse_catalog(raw: Any, config: Config) -> list[SelectedStream]:
    """Return the selected streams of a catalog, sorted by stream id, or raise CatalogError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("streams"), list):
        raise CatalogError('the catalog must be a JSON object with a "streams" list: run --discover to make one')
    selected = [stream for entry in raw["streams"] if (stream := _parse_entry(entry, config)) is not None]
    if not selected:
        LOGGER.warning(
            'No stream is selected in the catalog, so nothing is synced: set "selected": true in the metadata '
            "entry with breadcrumb [] of each stream to sync"
        )
    return sorted(selected, key=lambda stream: stream.tap_stream_id)


def _parse_entry(entry: Any, config: Config) -> SelectedStream | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("tap_stream_id"), str):
        raise CatalogError('every catalog stream needs a "tap_stream_id": run --discover to make the catalog')
    stream_id = entry["tap_stream_id"]
    properties = (entry.get("schema") or {}).get("properties")
    if not isinstance(properties, dict) or not isinstance(entry.get("metadata", []), list):
        raise CatalogError(f'catalog stream "{stream_id}" needs "schema.properties" and a "metadata" list')
    table_md, column_md = _metadata_by_breadcrumb(stream_id, entry.get("metadata", []))
    if table_md.get("selected") is not True:
        return None

    method = table_md.get("replication-method") or config.default_replication_method
    if method not in REPLICATION_METHODS:
        # a missing method is said as such: a message must never print Python's None
        given = "no replication-method set" if method is None else f"replication-method {method!r}"
        raise CatalogError(
            f'stream "{stream_id}" has {given}: set it to one of '
            f"{', '.join(REPLICATION_METHODS)} in the catalog metadata, or set default_replication_method"
        )
    schema_name = table_md.get("schema-name")
    table_name = entry.get("table_name") or entry.get("stream")
    if not schema_name or not table_name:
        raise CatalogError(f'stream "{stream_id}" lacks "schema-name" metadata or "table_name": rerun --discover')

    columns = [name for name in properties if _column_selected(column_md.get(name, {}))]
    if not columns:
        raise CatalogError(f'stream "{stream_id}" is selected but none of its columns is: select at least one')

    is_view = bool(table_md.get("is-view"))
    key_properties = list(table_md.get("table-key-properties") or [])
    if is_view and table_md.get("view-key-properties"):
        key_properties = list(table_md["view-key-properties"])

    replication_key = table_md.get("replication-key")
    if method == "INCREMENTAL":
        if not replication_key:
            raise CatalogError(
                f'stream "{stream_id}" is INCREMENTAL but has no "replication-key" metadata: name the column'
            )
        if replication_key not in properties:
            raise CatalogError(f'stream "{stream_id}" has replication-key "{replication_key}", not one of its columns')
        if replication_key not in columns:
            columns.append(replication_key)
    if method == "LOG_BASED" and is_view:
        raise CatalogError(f'stream "{stream_id}" is a view: LOG_BASED cannot read views, use FULL_TABLE')
    if method == "LOG_BASED":
        columns = _without_tap_properties(stream_id, columns, key_properties, config)

    schema = dict(entry["schema"])
    schema["properties"] = {name: properties[name] for name in columns}
    return SelectedStream(
        tap_stream_id=stream_id,
        schema_name=schema_name,
        table_name=table_name,
        is_view=is_view,
        replication_method=method,
        replication_key=replication_key if method == "INCREMENTAL" else None,
        key_properties=key_properties,
        columns=columns,
        schema=schema,
        metadata=table_md,
        catalog_columns=frozenset(properties),
    )


def log_based_properties(config: Config) -> tuple[str, ...]:
    """Return the properties the tap adds to every LOG_BASED record."""
    return (DELETED_AT, LSN) if config.debug_lsn else (DELETED_AT,)


def _without_tap_properties(stream_id: str, columns: list[str], keys: list[str], config: Config) -> list[str]:
    """Leave out of a LOG_BASED stream the columns named like a property the tap adds, warning once each.

    A record has one key of a name, and the tap's must win: a target deletes the rows whose
    `_sdc_deleted_at` is set. A key column cannot be left out, so it stops the run.
    """
    taken = [name for name in columns if name in log_based_properties(config)]
    for name in taken:
        fix = "rename the column, or replicate the stream with FULL_TABLE or INCREMENTAL, which add no such property"
        if name in keys:
            raise CatalogError(
                f'stream "{stream_id}": key column "{name}" is named like a property LOG_BASED adds: {fix}'
            )
        LOGGER.warning(
            '%s: column "%s" is left out of LOG_BASED records, which carry the tap\'s own "%s" (%s); to keep it, %s',
            stream_id,
            name,
            name,
            "the delete's commit time" if name == DELETED_AT else "the change's WAL position",
            fix,
        )
    return [name for name in columns if name not in taken]


def _metadata_by_breadcrumb(stream_id: str, entries: list) -> tuple[dict, dict[str, dict]]:
    """Split metadata entries into the table's and each column's."""
    table_md: dict = {}
    column_md: dict[str, dict] = {}
    for item in entries:
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            raise CatalogError(f'catalog stream "{stream_id}" has a metadata entry without a "metadata" object')
        breadcrumb = item.get("breadcrumb", [])
        if breadcrumb in ([], ()):
            table_md = item["metadata"]
        elif len(breadcrumb) == 2 and breadcrumb[0] == "properties":
            column_md[breadcrumb[1]] = item["metadata"]
    return table_md, column_md


def _column_selected(metadata: dict) -> bool:
    """Tell whether a column is emitted: automatic always, unsupported never, else as selected."""
    inclusion = metadata.get("inclusion")
    if inclusion == "unsupported":
        return False
    if inclusion == "automatic":
        return True
    if "selected" in metadata:
        return metadata["selected"] is True
    return metadata.get("selected-by-default", True) is not False

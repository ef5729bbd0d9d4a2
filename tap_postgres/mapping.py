"""Stream maps and flattening with singer-sdk's own mapper (`stream_maps`, `stream_map_config`,
`flattening_enabled`, `flattening_max_depth`), on a Python path for the streams they change.

`MappingWriter` stands between the run and its MessageWriter. A stream the maps leave as it is
(singer-sdk's SameRecordTransform under its own name, no flattening) keeps the byte path: its
copies are written straight to the real writer (`unmapped_writer`). Every RECORD line of a mapped
stream is parsed, passed through each of its stream maps (aliases, removed and computed properties,
`__filter__`, `__else__`, `__key_properties__`, `md5()`), and written once per map that keeps it;
its SCHEMA and ACTIVATE_VERSION go out under each alias.
"""

from __future__ import annotations

import copy
import decimal
import json
import logging
from typing import Any

from tap_postgres.config import Config
from tap_postgres.errors import ConfigError, TapPostgresError
from tap_postgres.output import RECORD_PREFIX, MessageWriter

LOGGER = logging.getLogger("tap-postgres")


class StreamMapError(TapPostgresError):
    """Raised when a stream map's expression fails on a record."""


def mapping_settings(config: Config) -> dict | None:
    """Return the singer-sdk plugin config of the maps, or None when the run asks for none."""
    settings = {
        "stream_maps": config.stream_maps or {},
        "stream_map_config": config.stream_map_config or {},
        "flattening_enabled": bool(config.flattening_enabled),
        "flattening_max_depth": config.flattening_max_depth,
    }
    if not settings["stream_maps"] and not settings["flattening_enabled"]:
        return None
    return settings


def mapped_writer(writer: MessageWriter, config: Config) -> MessageWriter:
    """Return `writer`, or a MappingWriter around it when stream maps or flattening are configured."""
    settings = mapping_settings(config)
    return writer if settings is None else MappingWriter(writer, settings)


def check_mapping(config: Config) -> None:
    """Build singer-sdk's mapper once, so a wrong map stops the run before it connects."""
    settings = mapping_settings(config)
    if settings is not None:
        _plugin_mapper(settings)


def _plugin_mapper(settings: dict):
    """Return singer-sdk's PluginMapper for `settings`; a wrong map is a ConfigError."""
    from singer_sdk.exceptions import MappingError  # most of a second to import: only runs with maps
    from singer_sdk.mapper import PluginMapper

    try:
        return PluginMapper(plugin_config=json.loads(json.dumps(settings)), logger=LOGGER)
    except MappingError as exc:
        raise ConfigError(f'config key "stream_maps" is not a valid singer-sdk stream map: {exc}') from None


class MappingWriter:
    """The run's writer when maps are configured: mapped streams through singer-sdk's mapper, the rest as bytes."""

    def __init__(self, writer: MessageWriter, settings: dict):
        from singer_sdk.mapper import SameRecordTransform

        self.writer = writer
        self.mapper = _plugin_mapper(settings)
        self.flattening = settings["flattening_enabled"]
        self.stream_maps = settings["stream_maps"]
        self._identity = SameRecordTransform
        self._mapped: set[str] = set()
        self._schemas: dict[str, dict] = {}  # each stream's unmapped schema (the SDK's maps change theirs)

    def __getattr__(self, name: str) -> Any:
        # envelope, versions_before_records, write_state, write_message, write_catalog, close
        return getattr(self.writer, name)

    def fast_map(self, stream: str, columns: list):
        """Return the stream's map as the server applies it to records of `columns`, or None."""
        from tap_postgres.fast_maps import FastMap

        maps = self.mapper.stream_maps.get(stream, [])
        if self.flattening or stream not in self._mapped or len(maps) != 1:
            return None
        return FastMap.of(self.stream_maps, stream, maps[0], self._schemas[stream], columns)

    def is_mapped(self, stream: str) -> bool:
        """Tell whether the stream's records go through the mapper (its SCHEMA must have been written)."""
        return stream in self._mapped

    @property
    def bytes_writer(self) -> MessageWriter:
        """The real writer, which unmapped streams' copies write to directly."""
        return self.writer

    def write_schema(self, stream: str, schema: dict, key_properties: list[str], bookmark_properties=None) -> None:
        """Register the stream with the mapper and write the SCHEMA of each of its maps."""
        from singer_sdk.exceptions import MappingError

        try:
            self.mapper.register_raw_stream_schema(stream, schema, key_properties)
        except (MappingError, NotImplementedError) as exc:  # NotImplementedError: an `__else__` but null
            raise StreamMapError(
                f"stream map of {stream} does not fit its schema: {exc}; fix it in stream_maps"
            ) from None
        self._schemas[stream] = copy.deepcopy(schema)
        maps = self.mapper.stream_maps[stream]
        identity = (
            not self.flattening
            and len(maps) == 1
            and type(maps[0]) is self._identity
            and maps[0].stream_alias == stream
        )
        if identity:
            self._mapped.discard(stream)
            self.writer.write_schema(stream, schema, key_properties, bookmark_properties)
            return
        self._mapped.add(stream)
        for stream_map in maps:
            if stream_map.transformed_schema is None or _removes(stream_map):
                continue
            self.writer.write_schema(
                stream_map.stream_alias,
                stream_map.transformed_schema,
                list(stream_map.transformed_key_properties or []),
                bookmark_properties,
            )

    def write_activate_version(self, stream: str, version: int) -> None:
        """Write ACTIVATE_VERSION under each alias of the stream."""
        if not self.is_mapped(stream):
            self.writer.write_activate_version(stream, version)
            return
        for stream_map in self.mapper.stream_maps[stream]:
            if not _removes(stream_map):
                self.writer.write_activate_version(stream_map.stream_alias, version)

    def write_lines(self, block: bytes) -> None:
        """Write RECORD lines: those of mapped streams mapped, the others as they are."""
        if not self._mapped:
            self.writer.write_lines(block)
            return
        passed: list[bytes] = []
        for line in block.splitlines(keepends=True):
            message = json.loads(line, parse_float=decimal.Decimal) if line.startswith(RECORD_PREFIX) else None
            if message is None or message["stream"] not in self._mapped:
                passed.append(line)
                continue
            if passed:
                self.writer.write_lines(b"".join(passed))
                passed.clear()
            self._write_mapped(message)
        if passed:
            self.writer.write_lines(b"".join(passed))

    def _write_mapped(self, message: dict) -> None:
        """Write one RECORD message once for each map of its stream that keeps it."""
        record = message["record"]
        for stream_map in self.mapper.stream_maps[message["stream"]]:
            try:
                mapped = stream_map.transform(dict(record))
            except Exception as exc:  # the user's expression: a bad name, or md5() of a null or a number
                raise StreamMapError(
                    f"stream map of {message['stream']} failed on a record: {type(exc).__name__}: {exc}; "
                    "fix the expression in stream_maps"
                ) from None
            if mapped is not None:
                self.writer.write_message({**message, "stream": stream_map.stream_alias, "record": mapped})


def _removes(stream_map) -> bool:
    """Tell whether a map drops every record of its stream (`null` or `__NULL__`, or `__else__` of the maps)."""
    from singer_sdk.mapper import RemoveRecordTransform

    return isinstance(stream_map, RemoveRecordTransform)

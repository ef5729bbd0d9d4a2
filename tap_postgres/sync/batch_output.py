"""Where a stream's copy goes: RECORD messages on the run's writer, or BATCH files when batch_config is set."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.discovery import Column
from tap_postgres.output import MessageWriter

LOGGER = logging.getLogger("tap-postgres")


@contextlib.contextmanager
def copy_output(
    writer: MessageWriter, config: Config, stream: SelectedStream, columns: list[Column]
) -> Iterator[MessageWriter]:
    """Yield the writer of one stream's copy: the mapping writer for a stream mapped in Python; else
    the real writer, or with batch_config a BatchWriter whose last files are announced when the copy
    ends and removed when it fails (no BATCH message named them). A stream whose map the server can
    apply (fast_maps.py) gets either under its alias, its query mapped."""
    # max_value_bytes' markers are replaced after the query: the SDK's mapper sees the nulls
    fast_map = None if config.max_value_bytes else writer.fast_map(stream.tap_stream_id, columns)
    if writer.is_mapped(stream.tap_stream_id) and fast_map is None:
        if config.batch_config:
            LOGGER.info(
                "%s: stream maps change its records in Python: RECORD messages, not BATCH files", stream.tap_stream_id
            )
        yield writer
        return
    writer = writer.bytes_writer  # an unmapped stream's lines skip the mapper
    if fast_map is not None:
        from tap_postgres.fast_maps import FastMapWriter

        LOGGER.info("%s: its stream map is applied by the server (the byte path)", stream.tap_stream_id)
    settings = config.batch
    if settings is None:
        yield writer if fast_map is None else FastMapWriter(writer, fast_map)
        return
    from tap_postgres.batch import BatchWriter

    batch_writer = BatchWriter(writer, settings, fast_map.alias if fast_map else stream.tap_stream_id)
    try:
        yield batch_writer if fast_map is None else FastMapWriter(batch_writer, fast_map)
    except BaseException:
        batch_writer.discard()
        raise
    batch_writer.flush_batch()

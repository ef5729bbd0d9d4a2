"""Where a stream's copy goes: RECORD messages on the run's writer, or BATCH files when batch_config is set."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.output import MessageWriter

LOGGER = logging.getLogger("tap-postgres")


@contextlib.contextmanager
def copy_output(writer: MessageWriter, config: Config, stream: SelectedStream) -> Iterator[MessageWriter]:
    """Yield the writer of one stream's copy: the mapping writer for a mapped stream; else the real
    writer, or with batch_config a BatchWriter whose last files are announced when the copy ends and
    removed when it fails (no BATCH message named them)."""
    if writer.is_mapped(stream.tap_stream_id):
        if config.batch_config:
            LOGGER.info(
                "%s: stream maps change its records in Python: RECORD messages, not BATCH files", stream.tap_stream_id
            )
        yield writer
        return
    writer = writer.bytes_writer  # an unmapped stream's lines skip the mapper
    settings = config.batch
    if settings is None:
        yield writer
        return
    from tap_postgres.batch import BatchWriter

    batch_writer = BatchWriter(writer, settings, stream.tap_stream_id)
    try:
        yield batch_writer
    except BaseException:
        batch_writer.discard()
        raise
    batch_writer.flush_batch()

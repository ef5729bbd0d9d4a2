"""One stream's sync: what belongs together while a stream is synced, handed to each method as one object."""

from __future__ import annotations

import dataclasses

from psycopg2 import extensions

from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import MessageWriter
from tap_postgres.state import StreamBookmark
from tap_postgres.sync.helper_sessions import HelperSessions
from tap_postgres.sync.rows import CopySettings


@dataclasses.dataclass
class StreamSync:
    """A stream being synced: its session, table, selected columns, bookmark, output, settings and helper sessions."""

    conn: extensions.connection
    table: Table
    stream: SelectedStream
    columns: list[Column]
    bookmark: StreamBookmark
    writer: MessageWriter
    settings: CopySettings
    helpers: HelperSessions | None = None

"""STATE in pipelinewise's layout: `currently_syncing` and per-stream bookmarks.

Bookmark keys, per method:
- FULL_TABLE: `version`, `last_replication_method`; while a table is part-copied also
  `resume_key` (the primary key of the last copied row, as text) and `snapshot_xmin`.
- INCREMENTAL: `version`, `last_replication_method`, `replication_key`, `replication_key_value`.
- LOG_BASED: `version`, `last_replication_method`, `lsn` (an integer, as pipelinewise writes it:
  changes of transactions ending at or before it have been emitted); during the initial copy
  also FULL_TABLE's `resume_key`, or pipelinewise's `xmin`.
A pipelinewise `xmin` bookmark (an interrupted FULL_TABLE of pipelinewise) is honoured by copying
the table again under the same version.
"""

from __future__ import annotations

import re
from typing import Any

from tap_postgres.errors import StateError


def parse_state(raw: Any) -> dict:
    """Return a state dict in pipelinewise's layout, or raise StateError naming what is wrong."""
    if raw in (None, {}):
        return {"bookmarks": {}, "currently_syncing": None}
    if isinstance(raw, dict) and raw.get("type") == "STATE" and "value" in raw:
        raw = raw["value"]  # a STATE message saved whole
    if not isinstance(raw, dict):
        raise StateError('the state file must hold a JSON object with a "bookmarks" object')
    bookmarks = raw.get("bookmarks", {})
    if not isinstance(bookmarks, dict) or not all(isinstance(value, dict) for value in bookmarks.values()):
        raise StateError('"bookmarks" in the state file must map each stream id to an object: fix or remove the file')
    currently_syncing = raw.get("currently_syncing")
    if currently_syncing is not None and not isinstance(currently_syncing, str):
        raise StateError('"currently_syncing" in the state file must be a stream id or null')
    state = dict(raw)
    state["bookmarks"] = {stream: dict(bookmark) for stream, bookmark in bookmarks.items()}
    state["currently_syncing"] = currently_syncing
    return state


def bookmark(state: dict, stream_id: str) -> dict:
    """Return the stream's bookmark, created empty when missing (it is the state's own dict)."""
    return state["bookmarks"].setdefault(stream_id, {})


def reset_on_method_change(state: dict, stream_id: str, method: str, replication_key: str | None) -> None:
    """Forget a stream's bookmark when its replication method or INCREMENTAL key changed, like pipelinewise."""
    current = bookmark(state, stream_id)
    last_method = current.get("last_replication_method")
    if last_method is not None and last_method != method:
        current.clear()
    elif method == "INCREMENTAL" and current.get("replication_key") != replication_key:
        current.clear()
    current["last_replication_method"] = method


def bookmark_lsn(state: dict, stream_id: str) -> int | None:
    """Return a stream's `lsn` bookmark as an int (pipelinewise writes ints; `X/Y` text is read too)."""
    value = state["bookmarks"].get(stream_id, {}).get("lsn")
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and re.fullmatch("[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", value):
        return lsn_to_int(value)
    raise StateError(f'the "lsn" bookmark of {stream_id} is {value!r}, not a WAL position: fix or remove it')


def lsn_to_int(lsn: str) -> int:
    """Return the integer of an `X/Y` LSN."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(lsn: int) -> str:
    """Return the `X/Y` text of an integer LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

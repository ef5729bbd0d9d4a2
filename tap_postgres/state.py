"""STATE in pipelinewise's layout: `currently_syncing` and per-stream bookmarks.

Bookmark keys, per method:
- FULL_TABLE: `version`, `last_replication_method`; while a table is part-copied also
  `resume_key` (the primary key of the last copied row, as text) and `snapshot_xmin`.
- INCREMENTAL: `version`, `last_replication_method`, `replication_key`, `replication_key_value`.
- LOG_BASED: `version`, `last_replication_method`, `lsn` (an integer, as pipelinewise writes it).
A pipelinewise `xmin` bookmark (an interrupted FULL_TABLE of pipelinewise) is honoured by copying
the table again under the same version.
"""

from __future__ import annotations

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

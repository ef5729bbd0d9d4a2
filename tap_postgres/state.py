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

Every bookmark this tap writes also holds its `origin` (a key pipelinewise ignores): the server's
system identifier, the database's oid and name and, for LOG_BASED, the slot. A bookmark from
another server, database or slot is refused: its positions mean nothing here, and following
them would skip changes for good. A bookmark without one (pipelinewise's) is taken as it is.

A LOG_BASED bookmark read through pgoutput also holds `publication_membership`, a token of its
table's membership in the publication (publication.membership_tokens): a different token at the
next run means the table was out of the publication for a while, and the stream is copied anew.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import re
from typing import Any

from tap_postgres.errors import StateError

# Integer bookmarks and the values they may take: a version is a bigint at the targets, xids and
# WAL positions are unsigned 64-bit numbers on the server.
_INTEGER_LIMITS = {"version": 2**63, "snapshot_xmin": 2**64, "xmin": 2**64, "lsn": 2**64}
# What a key value in a bookmark may be: a JSON scalar other than null (booleans are ints)
_SCALARS = (str, int, decimal.Decimal, float)
# The bookmark key of a LOG_BASED stream's membership token in pgoutput's publication
MEMBERSHIP_KEY = "publication_membership"
_FIX = "fix it, or remove the stream's bookmark from the state to sync it anew"


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


def check_bookmark(stream_id: str, saved: dict) -> None:
    """Raise StateError naming the stream, the key and the value when a bookmark value has the wrong shape.

    Whether a key value is a value of its column's type is the server's to say (sync.preflight).
    """
    for key, limit in _INTEGER_LIMITS.items():
        value = saved.get(key)
        if value is not None and key != "lsn" and not _is_integer_below(value, limit):
            raise StateError(
                f'{stream_id}: the state\'s "{key}" is {shown(value)}, not an integer from 0 to {limit - 1}: {_FIX}'
            )
    parse_lsn(stream_id, saved.get("lsn"))
    for key in ("replication_key", "last_replication_method"):
        if saved.get(key) is not None and not isinstance(saved[key], str):
            raise StateError(f'{stream_id}: the state\'s "{key}" is {shown(saved[key])}, not a name: {_FIX}')
    value = saved.get("replication_key_value")
    if value is not None and not _is_scalar(value):
        raise StateError(f'{stream_id}: the state\'s "replication_key_value" is {shown(value)}, not one value: {_FIX}')
    resume_key = saved.get("resume_key")
    if resume_key is not None and not (
        isinstance(resume_key, list) and resume_key and all(_is_scalar(item) for item in resume_key)
    ):
        raise StateError(
            f'{stream_id}: the state\'s "resume_key" is {shown(resume_key)}, not a list of key values: {_FIX}'
        )


def _is_integer_below(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit


def _is_scalar(value: Any) -> bool:
    # no text holds a NUL on the server: such a value cannot be one of a key's
    return isinstance(value, _SCALARS) and not (isinstance(value, str) and "\x00" in value)


def shown(value: Any) -> str:
    """Return a value as the state file spells it, cut short, for an error message."""
    text = _as_json(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_json(value: Any) -> str:
    if isinstance(value, decimal.Decimal):
        return str(value)  # a number with a fraction, as read: not a string
    if isinstance(value, list):
        return "[" + ", ".join(_as_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_as_json(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a bookmark belongs: a server (its system identifier), a database (its oid) and, for LOG_BASED, a slot."""

    system_identifier: str | None  # None where the tap's user may not read pg_control_system()
    database_oid: int
    dbname: str
    slot: str | None = None

    def to_bookmark(self) -> dict:
        """Return the form kept in a bookmark's `origin`."""
        kept = {"system_identifier": self.system_identifier, "database_oid": self.database_oid, "dbname": self.dbname}
        return {**kept, "slot": self.slot} if self.slot is not None else kept

    @classmethod
    def from_bookmark(cls, stream_id: str, value: Any) -> Origin:
        """Read a bookmark's `origin`, or raise StateError naming the stream."""
        fields = {"system_identifier": (str, type(None)), "database_oid": int, "dbname": str, "slot": (str, type(None))}
        if not (
            isinstance(value, dict)
            and {"database_oid", "dbname"} <= value.keys() <= fields.keys()
            and all(isinstance(value[key], fields[key]) for key in value)
            and not isinstance(value["database_oid"], bool)
        ):
            raise StateError(
                f'{stream_id}: the state\'s "origin" is {shown(value)}, not the server, database and slot this tap '
                'records: restore the state the target saved, or remove "origin" from the stream\'s bookmark'
            )
        return cls(**value)

    def describe(self) -> str:
        """Return this origin as an error message names it."""
        server = f"server {self.system_identifier}" if self.system_identifier else "a server"
        slot = f', replication slot "{self.slot}"' if self.slot else ""
        return f'database "{self.dbname}" (oid {self.database_oid}) on {server}{slot}'

    def differs_from(self, saved: Origin) -> bool:
        """Tell whether a bookmark recorded at `saved` cannot belong here (what either side does not know is not compared)."""
        return (
            (
                None not in (self.system_identifier, saved.system_identifier)
                and self.system_identifier != saved.system_identifier
            )
            or self.database_oid != saved.database_oid
            or (None not in (self.slot, saved.slot) and self.slot != saved.slot)
        )


def check_origin(stream_id: str, saved: dict, here: Origin) -> None:
    """Raise StateError when the stream's bookmark was written for another server, database or slot."""
    if saved.get("origin") is None:
        return  # pipelinewise's bookmarks, and this tap's before it kept one
    there = Origin.from_bookmark(stream_id, saved["origin"])
    if here.differs_from(there):
        raise StateError(
            f"{stream_id}: the state was written for {there.describe()}, and this run reads {here.describe()}: "
            "a state belongs to one pipeline; give this one its own state file (or none, to sync anew). If the "
            'database was moved or restored and the state is right for it, remove "origin" from the stream\'s '
            "bookmark"
        )


def claim_bookmarks(state: dict, stream_ids: list[str], origin: Origin) -> None:
    """Refuse the streams' bookmarks if any belongs elsewhere, then record in each where it belongs now."""
    for stream_id in stream_ids:
        check_origin(stream_id, bookmark(state, stream_id), origin)
    for stream_id in stream_ids:
        bookmark(state, stream_id)["origin"] = origin.to_bookmark()


def saved_position(raw_state: Any, emitted: dict[str, int], origin: Origin) -> int | None:
    """Return the lowest `lsn` a state the target saved holds for these streams, or None when it cannot tell.

    `raw_state` is the state file as read now (files.PolledJsonFile), the one a target's runner
    (PipelineWise) rewrites as the target commits: a file being rewritten, unreadable or malformed
    (None), or missing a stream's `lsn`, tells nothing yet. A state that cannot be what the target
    saved of this run's output raises StateError: a bookmark of another origin, or an `lsn` past
    the one this run emitted for the stream (`emitted`).
    """
    if raw_state is None:
        return None
    try:
        state = parse_state(raw_state)
        positions = {stream_id: bookmark_lsn(state, stream_id) for stream_id in emitted}
    except StateError:
        return None
    if not positions or None in positions.values():
        return None
    for stream_id, lsn in positions.items():
        check_origin(stream_id, state["bookmarks"][stream_id], origin)
        if lsn > emitted[stream_id]:
            raise StateError(
                f'{stream_id}: the state file\'s "lsn" {int_to_lsn(lsn)} is past what this run emitted '
                f"({int_to_lsn(emitted[stream_id])}), so no target saved it from this run"
            )
    return min(positions.values())


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
    return parse_lsn(stream_id, state["bookmarks"].get(stream_id, {}).get("lsn"))


def parse_lsn(stream_id: str, value: Any) -> int | None:
    """Return an `lsn` bookmark value as an int, or raise StateError naming the stream and the value."""
    if value is None or _is_integer_below(value, _INTEGER_LIMITS["lsn"]):
        return value
    if isinstance(value, str) and re.fullmatch("[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", value):
        return lsn_to_int(value)
    raise StateError(f'{stream_id}: the state\'s "lsn" is {shown(value)}, not a WAL position: {_FIX}')


def lsn_to_int(lsn: str) -> int:
    """Return the integer of an `X/Y` LSN."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(lsn: int) -> str:
    """Return the `X/Y` text of an integer LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

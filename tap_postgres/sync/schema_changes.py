"""Schema changes under LOG_BASED: what a stream's changes can carry, and when it must be copied again.

Logical decoding carries rows, never DDL. Each LOG_BASED bookmark therefore records its table's
columns as the tap last read them (`table_columns`: each name with its number and its type), and
every run compares them with the table as it is now:
- a column added without a value for the rows already there, a column dropped, a column
  retyped: the changes carry all the target needs; a retyped column's SCHEMA follows its type;
- a column renamed (the same number under a new name), or added with values for the rows already
  there (a default, an identity, a generation expression): the WAL never carried those values, so
  the stream is copied again under a new table version, and its changes are then read from its
  bookmark, as they were before (a change written before the rename fills its other columns from
  the stored row: see changes.py).
"""

from __future__ import annotations

from typing import Any

from tap_postgres.discovery import Column, Table

COLUMNS_KEY = "table_columns"


def recorded_columns(table: Table) -> dict[str, list]:
    """Return the bookmark's record of the table's columns: each name with its number and type."""
    return {column.name: [column.placement.number, column.placement.type_text] for column in table.columns}


def _numbers(recorded: Any) -> dict[int, tuple[str, str]]:
    """Read a recorded `table_columns` by column number; what is not this tap's record reads as nothing."""
    if not isinstance(recorded, dict):
        return {}
    numbers = {}
    for name, value in recorded.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], str):
            numbers[value[0]] = (name, value[1])
    return numbers


def copy_reason(recorded: Any, table: Table) -> str | None:
    """Say why the stream must be copied again since `recorded`, or None when its changes carry everything."""
    numbers = _numbers(recorded)
    if not numbers:
        return None  # a bookmark from before the tap recorded columns: nothing to compare with
    for column in table.columns:
        before = numbers.get(column.placement.number)
        if before is not None and before[0] != column.name:
            return f'column "{before[0]}" was renamed to "{column.name}"'
        if before is None and column.placement.filled_when_added:
            return (
                f'column "{column.name}" was added with values for the rows already there (a default, an identity '
                "or a generation expression), which the WAL does not carry"
            )
    return None


def key_renamed(recorded: Any, table: Table) -> bool:
    """Tell whether a column of the table's primary key had another name in `recorded`."""
    numbers = _numbers(recorded)
    return any(
        (before := numbers.get(column.placement.number)) is not None and before[0] != column.name
        for column in table.columns
        if column.name in table.primary_key
    )


def retyped_columns(recorded: Any, table: Table) -> list[tuple[Column, str]]:
    """Return the table's columns whose type changed since `recorded`, each with its type before."""
    numbers = _numbers(recorded)
    retyped = []
    for column in table.columns:
        before = numbers.get(column.placement.number)
        if before is not None and before[0] == column.name and before[1] != column.placement.type_text:
            retyped.append((column, before[1]))
    return retyped

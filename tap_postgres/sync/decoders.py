"""The two output plugins LOG_BASED reads, decoded into one form of change for the rest of the WAL pass.

A decoder turns one replication message into a `Change` or None (a message that only informs the
decoder, such as pgoutput's relation messages). `changes.StreamChanges` renders a whole new row
in the tap where local_render can (pgoutput's texts; wal2json's values as parsed, numerics' text
cut out of the message by `wal2json_values`), and sends the other row changes back to the server
to render: wal2json's own JSON as it came; from pgoutput, a whole new row as the list of its
values' texts, any other change written as wal2json's format-version 2 object. Every value stays
the text of the type's output function, so both plugins render byte-identical records.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import struct

import orjson

from tap_postgres.state import int_to_lsn, lsn_to_int

# Microseconds since 2000-01-01 UTC, PostgreSQL's epoch, in pgoutput's timestamps
_POSTGRES_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_BYTEA_OID = 17
_INT16, _INT32 = struct.Struct("!h"), struct.Struct("!i")
_UINT16, _UINT32 = struct.Struct("!H").unpack_from, struct.Struct("!I").unpack_from


@dataclasses.dataclass
class Change:
    """One decoded message: a transaction's begin or commit, a row change, or a truncate."""

    action: str  # B(egin), C(ommit), I(nsert), U(pdate), D(elete), T(runcate)
    xid: int = 0  # B: the transaction id
    # B: a position at or past which a stream's bookmark means the transaction was emitted
    end: int = 0
    relations: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # I/U/D: one; T: each truncated
    names: list[str] | tuple[str, ...] = ()  # I/U: the names of the new row's columns, in the order sent
    # pgoutput's full new row: its values in the order of `names`, rendered by position without
    # ever being written as wal2json's objects (None: only `message` describes the change)
    values: list[str | None] | None = None
    whole_row: bool = False  # `values` is a new row with every column, and nothing else is to be said
    lsn: str = ""  # the change's position as `X/Y` text, for debug_lsn
    timestamp: str = ""  # the commit time, which a delete emits
    _message: dict | None = None
    _payload: bytes = b""

    @property
    def message(self) -> dict:
        """I/U/D: wal2json's format-version 2 object of the change."""
        if self._message is None:
            schema, table = self.relations[0]
            message = {"action": self.action, "timestamp": self.timestamp, "lsn": self.lsn}
            message["schema"], message["table"] = schema, table
            if self.values is not None:  # "columns" last: StreamChanges cuts it out of the JSON text
                message["columns"] = [
                    {"name": name, "value": value} for name, value in zip(self.names, self.values, strict=True)
                ]
            self._message = message
        return self._message

    @property
    def payload(self) -> bytes:
        """I/U/D: that object's JSON text."""
        if not self._payload:
            self._payload = orjson.dumps(self.message)
        return self._payload

    def forget_payload(self) -> None:
        """Make `payload` write `message` again, after its values were changed."""
        self._payload = b""


class Wal2jsonDecoder:
    """wal2json format-version 2: one JSON object per message, passed on as it came."""

    plugin = "wal2json"

    def decode(self, payload: bytes) -> Change | None:
        """Return the change a wal2json message describes."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = json.loads(payload)  # numbers beyond a double (numeric 1e400)
        action = message["action"]
        if action == "B":
            # nextlsn is the end of the commit record, where the bookmark of an emitted transaction is
            return Change("B", xid=message["xid"], end=lsn_to_int(message["nextlsn"]))
        if action in ("I", "U", "D"):
            relation = (message["schema"], message["table"])
            names = tuple(column["name"] for column in message.get("columns", ()))
            change = Change(action, relations=[relation], names=names, lsn=message.get("lsn", ""))
            change._message, change._payload = message, payload
            return change
        if action == "T":
            return Change("T", relations=[(message["schema"], message["table"])])
        return Change(action)  # C, and M (messages are not asked for)


def wal2json_values(change: Change, number_texts: list[tuple[int, bytes]]) -> list | None:
    """Return the values of a wal2json insert's or update's new row as orjson read them, with the JSON text of some.

    `number_texts`: (position in the columns array, the text before the value) of the numeric values,
    in order, whose text is wanted as it came (a double would lose digits and the scale); None when
    one is not where it should be. A string value cannot hold the text before a value: every quote
    in it is escaped.
    """
    values = [column["value"] for column in change.message["columns"]]
    if number_texts:
        payload = change.payload
        at = 0
        for position, before in number_texts:
            at = payload.find(before, at)
            if at < 0:
                return None
            at += len(before)
            if values[position] is not None:  # null, also for NaN and the infinities
                values[position] = payload[at : payload.index(b"}", at)].decode()
    return values


@dataclasses.dataclass(frozen=True)
class _Relation:
    schema: str
    table: str
    names: tuple[str, ...]
    key_names: frozenset[str]  # the columns of the replica identity key
    bytea_columns: tuple[int, ...]  # the indexes of the bytea columns, which wal2json prints as bare hex


class PgoutputDecoder:
    """pgoutput's binary protocol, text values, no messages, no in-progress streaming."""

    plugin = "pgoutput"

    def __init__(self) -> None:
        self.relations: dict[int, _Relation] = {}
        self.timestamp = ""
        self.lsn = ""

    def decode(self, payload: bytes) -> Change | None:
        """Return the change a pgoutput message describes, or None for one that only informs the decoder."""
        kind = payload[:1]
        if kind == b"B":
            final_lsn, committed, xid = struct.unpack_from("!QqI", payload, 1)
            self.timestamp = (_POSTGRES_EPOCH + datetime.timedelta(microseconds=committed)).isoformat()
            self.lsn = int_to_lsn(final_lsn)
            # final_lsn is where the commit record starts. A bookmark is a record's end (a commit's,
            # or a keepalive's), never inside the commit record: it is past final_lsn exactly when
            # it is at or past the commit's end, as with wal2json's nextlsn.
            return Change("B", xid=xid, end=final_lsn + 1)
        if kind == b"C":
            return Change("C")
        if kind == b"R":
            self._read_relation(payload)
            return None
        if kind in (b"I", b"U", b"D"):
            return self._row_change(kind.decode(), payload)
        if kind == b"T":
            (count,) = _INT32.unpack_from(payload, 1)
            relids = struct.unpack_from(f"!{count}I", payload, 6)
            return Change("T", relations=[(self.relations[r].schema, self.relations[r].table) for r in relids])
        return None  # Y(pe) and O(rigin) tell nothing the tap needs

    def takes_texts_as_sent(self, payload: bytes) -> bool:
        """Tell whether a row change's values are their texts as sent (whole_row_values): its relation has no bytea."""
        (relid,) = _UINT32(payload, 1)
        return not self.relations[relid].bytea_columns

    def _read_relation(self, payload: bytes) -> None:
        (relid,) = struct.unpack_from("!I", payload, 1)
        schema, offset = _string(payload, 5)
        table, offset = _string(payload, offset)
        (count,) = _INT16.unpack_from(payload, offset + 1)  # after the replica identity setting
        offset += 3
        names, key_names, bytea_columns = [], set(), []
        for index in range(count):
            flags = payload[offset]
            name, offset = _string(payload, offset + 1)
            type_oid, _typmod = struct.unpack_from("!Ii", payload, offset)
            offset += 8
            names.append(name)
            if flags & 1:
                key_names.add(name)
            if type_oid == _BYTEA_OID:
                bytea_columns.append(index)
        self.relations[relid] = _Relation(schema, table, tuple(names), frozenset(key_names), tuple(bytea_columns))

    def _row_change(self, action: str, payload: bytes) -> Change:
        (relid,) = struct.unpack_from("!I", payload, 1)
        relation = self.relations[relid]
        offset = 5
        identity = None
        key_only = True
        if payload[offset : offset + 1] in (b"K", b"O"):
            key_only = payload[offset : offset + 1] == b"K"
            names, values, offset = self._values(relation, payload, offset + 1)
            # a key-only tuple has every column, the ones outside the key NULL: only the key is said
            identity = [
                {"name": name, "value": value}
                for name, value in zip(names, values, strict=True)
                if not key_only or name in relation.key_names
            ]
        change = Change(action, relations=[(relation.schema, relation.table)], lsn=self.lsn, timestamp=self.timestamp)
        if payload[offset : offset + 1] == b"N":
            change.names, change.values, _ = self._values(relation, payload, offset + 1)
        if identity is None and change.names is relation.names:
            change.whole_row = True  # the common case: its values are rendered by position
            return change
        if identity is not None:
            # REPLICA IDENTITY FULL (the old row) or not (the key): a delete's generated columns
            # are evaluated over the old row only when it is whole
            change.message["identity"], change.message["identity_full"] = identity, not key_only
        return change

    @staticmethod
    def _values(relation: _Relation, payload: bytes, offset: int) -> tuple[tuple[str, ...], list[str | None], int]:
        """Read TupleData: the names and texts of its columns (NULL as None), and the offset after it.

        An unchanged TOASTed value is not sent: it is left out, as wal2json does, and the names
        are then the columns sent; otherwise they are the relation's own tuple (the same object).
        """
        count = _UINT16(payload, offset)[0]
        offset += 2
        values: list[str | None] = []
        append = values.append
        left_out = []
        for index in range(count):
            kind = payload[offset]
            if kind == 0x74:  # 't': text
                length = _UINT32(payload, offset + 1)[0]
                offset += 5
                append(payload[offset : offset + length].decode())
                offset += length
            elif kind == 0x6E:  # 'n': NULL
                offset += 1
                append(None)
            elif kind == 0x75:  # 'u': an unchanged TOASTed value
                offset += 1
                left_out.append(index)
            else:
                raise ValueError(f"pgoutput sent a value of kind {chr(kind)!r}, which the tap does not ask for")
        names = relation.names
        if left_out:
            names = tuple(name for index, name in enumerate(names) if index not in left_out)
        for index in relation.bytea_columns:  # wal2json prints bytea as bare hex: so must this
            if index not in left_out:
                position = index - sum(1 for skipped in left_out if skipped < index)
                text = values[position]
                if text is not None and text.startswith("\\x"):
                    values[position] = text[2:]
        return names, values, offset


def whole_row_json(payload: bytes, readers: list) -> list[bytes | None] | None:
    """Read the new row of an insert or update that carries only it (`N` at offset 5) into each value's JSON,
    by the reader of its column (None: a column left out), null as null; None when the row has
    another number of columns or left a TOASTed value out.

    The WAL pass's fast path (local_render.LocalRows.tuple_record): no Change, no names, one loop.
    """
    if _UINT16(payload, 6)[0] != len(readers):
        return None
    offset = 8
    values: list[bytes | None] = []
    append = values.append
    for read in readers:
        kind = payload[offset]
        if kind == 0x74:
            length = _UINT32(payload, offset + 1)[0]
            offset += 5
            if read is not None:
                append(read(payload[offset : offset + length]))
            offset += length
        elif kind == 0x6E:
            offset += 1
            if read is not None:
                append(b"null")
        else:
            return None  # 'u', or a kind the general path refuses with its reason
    return values


def _string(payload: bytes, offset: int) -> tuple[str, int]:
    """Read a NUL-terminated string; return it and the offset after it."""
    end = payload.index(b"\x00", offset)
    return payload[offset:end].decode(), end + 1

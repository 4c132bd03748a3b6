"""A decoder of PostgreSQL's pgoutput logical replication messages (protocol version 1).

Only what capture needs: transaction boundaries, relations, and the rows' columns as text.
Column values stay text (pgoutput's default text format) and are typed by SQL later; a
column the message does not carry (an unchanged TOASTed value) is ``UNCHANGED``.
See https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

UNCHANGED: Final = object()
"""A column pgoutput did not send: an unchanged TOASTed value ('u')."""

Value = str | None | object
"""A column's text, None for SQL NULL, or ``UNCHANGED``."""


@dataclass(frozen=True)
class Begin:
    xid: int


@dataclass(frozen=True)
class Commit:
    end_lsn: int
    """Where the slot may be advanced to once this transaction's effects are stored."""


@dataclass(frozen=True)
class Relation:
    relid: int
    schema: str
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Insert:
    relid: int
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Update:
    relid: int
    old: tuple[Value, ...] | None
    """The old key ('K', when it changed) or the whole old row ('O', REPLICA IDENTITY FULL)."""
    old_is_key: bool
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Delete:
    relid: int
    old: tuple[Value, ...]
    old_is_key: bool


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | None

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def u8(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        (value,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(value)

    def u32(self) -> int:
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(0, self.pos)
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def tuple_data(self) -> tuple[Value, ...]:
        values: list[Value] = []
        for _ in range(self.u16()):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind in ("t", "b"):
                length = self.u32()
                raw = self.data[self.pos : self.pos + length]
                self.pos += length
                values.append(raw.decode("utf-8") if kind == "t" else bytes(raw))
            else:
                raise ValueError(f"unknown pgoutput tuple column kind {kind!r}")
        return tuple(values)


def decode(data: bytes) -> Message:
    """One pgoutput message; None for kinds capture ignores (origin, type, logical message)."""
    reader = _Reader(data)
    kind = reader.byte()
    if kind == "B":
        reader.u64()  # final LSN
        reader.u64()  # commit timestamp
        return Begin(xid=reader.u32())
    if kind == "C":
        reader.u8()  # flags
        reader.u64()  # commit LSN
        return Commit(end_lsn=reader.u64())
    if kind == "R":
        relid = reader.u32()
        schema = reader.string()
        name = reader.string()
        reader.u8()  # replica identity
        columns = []
        for _ in range(reader.u16()):
            reader.u8()  # flags (part of the key)
            columns.append(reader.string())
            reader.u32()  # type oid
            reader.u32()  # type modifier
        return Relation(relid, schema, name, tuple(columns))
    if kind == "I":
        relid = reader.u32()
        reader.byte()  # 'N'
        return Insert(relid, reader.tuple_data())
    if kind == "U":
        relid = reader.u32()
        marker = reader.byte()
        old: tuple[Value, ...] | None = None
        old_is_key = marker == "K"
        if marker in ("K", "O"):
            old = reader.tuple_data()
            marker = reader.byte()  # 'N'
        return Update(relid, old, old_is_key, reader.tuple_data())
    if kind == "D":
        relid = reader.u32()
        marker = reader.byte()
        return Delete(relid, reader.tuple_data(), marker == "K")
    if kind == "T":
        count = reader.u32()
        reader.u8()  # options (CASCADE, RESTART IDENTITY)
        return Truncate(tuple(reader.u32() for _ in range(count)))
    return None


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

"""A msgpack encoder that writes bytes the way Kong's lua-MessagePack 0.5 does.

What differs from msgpack-python (kong-protocol.md 2.3): strings are ``fixstr``, ``str16``
or ``str32`` (never ``str8``), non-integral numbers are always float64 and integral floats
are integers, and a string may hold bytes that are not UTF-8 (give a ``str`` with surrogate
escapes, or a :class:`LuaString`). ``bytes`` are written as ``bin``, as Kong 3.x does for
raw bodies.
"""

from __future__ import annotations

import struct
from typing import Any


class LuaString(bytes):
    """Raw bytes that Kong sends as a msgpack *str* (e.g. a header value that is not UTF-8)."""


class EmptyLuaTable:
    """An empty Lua table: lua-MessagePack writes it as an empty *array*."""


EMPTY_TABLE = EmptyLuaTable()


def pack(value: Any) -> bytes:
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0xC0)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, LuaString):
        _pack_str(bytes(value), out)
    elif isinstance(value, bytes | bytearray):
        _pack_bin(bytes(value), out)
    elif isinstance(value, str):
        _pack_str(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, int):
        _pack_int(value, out)
    elif isinstance(value, float):
        if value.is_integer() and abs(value) < 2**63:
            _pack_int(int(value), out)
        else:
            out.append(0xCB)
            out += struct.pack(">d", value)
    elif isinstance(value, EmptyLuaTable):
        out.append(0x90)
    elif isinstance(value, list | tuple):
        _pack_header(len(value), out, 0x90, 0xDC, 0xDD)
        for item in value:
            _pack(item, out)
    elif isinstance(value, dict):
        _pack_header(len(value), out, 0x80, 0xDE, 0xDF)
        for key, item in value.items():
            _pack(key, out)
            _pack(item, out)
    else:
        raise TypeError(f"cannot pack {type(value).__name__} the way lua-MessagePack does")


def _pack_str(data: bytes, out: bytearray) -> None:
    n = len(data)
    if n < 32:
        out.append(0xA0 | n)
    elif n < 0x10000:
        out += b"\xda" + struct.pack(">H", n)  # str16 even for short strings: never str8
    else:
        out += b"\xdb" + struct.pack(">I", n)
    out += data


def _pack_bin(data: bytes, out: bytearray) -> None:
    n = len(data)
    if n < 0x100:
        out += b"\xc4" + struct.pack(">B", n)
    elif n < 0x10000:
        out += b"\xc5" + struct.pack(">H", n)
    else:
        out += b"\xc6" + struct.pack(">I", n)
    out += data


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n < 0x80:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif n >= 0:
        for marker, fmt, limit in ((0xCC, ">B", 2**8), (0xCD, ">H", 2**16),
                                   (0xCE, ">I", 2**32), (0xCF, ">Q", 2**64)):
            if n < limit:
                out.append(marker)
                out += struct.pack(fmt, n)
                return
        raise OverflowError(n)
    else:
        for marker, fmt, limit in ((0xD0, ">b", 2**7), (0xD1, ">h", 2**15),
                                   (0xD2, ">i", 2**31), (0xD3, ">q", 2**63)):
            if -limit <= n:
                out.append(marker)
                out += struct.pack(fmt, n)
                return
        raise OverflowError(n)


def _pack_header(n: int, out: bytearray, fix: int, mark16: int, mark32: int) -> None:
    if n < 16:
        out.append(fix | n)
    elif n < 0x10000:
        out.append(mark16)
        out += struct.pack(">H", n)
    else:
        out.append(mark32)
        out += struct.pack(">I", n)

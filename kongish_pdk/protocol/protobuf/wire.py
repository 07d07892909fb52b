"""The protobuf wire format for the few messages that carry raw strings, byte-tolerant.

Kong's lua-protobuf puts any bytes in a ``string`` field (a header value that is not UTF-8),
and a plugin may send such a value back (it arrives as a ``str`` with surrogate escapes, as
over MsgPack:1). The ``protobuf`` package refuses both directions, so ``String``, ``KV``,
``google.protobuf.Value``/``Struct``/``ListValue`` fall back to this reader and writer when
it does. Same field numbers and wire types: the bytes are what protobuf would produce for
valid UTF-8 (the tests check that), and what Kong sends and expects otherwise.

The rules both paths follow (this one and ``values.py``/``calls.py`` over the ``protobuf``
package) live here, where the ``protobuf`` package is not needed: when encoding, :func:`raw`,
:func:`unsendable` and :func:`bad_key`; when decoding, :func:`lua_number`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_DOUBLE = struct.Struct("<d")
_EXACT_FLOAT = 2.0**53


class WireError(ValueError):
    """Not a valid protobuf message."""


# ------------------------------------------------------------------------------ shared rules

def lua_number(value: float) -> int | float:
    """A ``number_value`` as a plugin gets it: Lua numbers are doubles and lua-MessagePack
    sends integral ones as integers, so whole (exactly representable) doubles become int."""
    return int(value) if value.is_integer() and abs(value) < _EXACT_FLOAT else value


def raw(text: Any) -> bytes:
    """The bytes of a str (surrogate escapes kept, as over MsgPack:1) or bytes-like value."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


def unsendable(value: Any) -> TypeError:
    """The error for a value no ``google.protobuf.Value`` can hold."""
    return TypeError(f"cannot send a {type(value).__name__} over ProtoBuf:1 "
                     "(use str, bytes, numbers, bool, None, lists and dicts)")


def bad_key(key: Any) -> TypeError:
    """The error for a map key that is not a str (``Struct`` keys are strings)."""
    return TypeError(f"ProtoBuf:1 maps need string keys, got {key!r}")


# ------------------------------------------------------------------------------ reading

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes otherwise."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, kind, value
        elif kind == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise WireError("truncated length-delimited field")
            yield number, kind, buf[pos:pos + size]
            pos += size
        elif kind == _I64:
            if pos + 8 > end:
                raise WireError("truncated 64-bit field")
            yield number, kind, buf[pos:pos + 8]
            pos += 8
        elif kind == _I32:
            if pos + 4 > end:
                raise WireError("truncated 32-bit field")
            yield number, kind, buf[pos:pos + 4]
            pos += 4
        else:
            raise WireError(f"unsupported wire type {kind}")


def text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def read_string(buf: bytes) -> str:
    """``String.v`` (or any message whose field 1 is a string)."""
    value = ""
    for number, kind, data in fields(buf):
        if number == 1 and kind == _LEN:
            value = text(data)
    return value


def read_value(buf: bytes) -> Any:
    value: Any = None
    for number, kind, data in fields(buf):
        if number == 2 and kind == _I64:
            value = lua_number(_DOUBLE.unpack(data)[0])
        elif number == 3 and kind == _LEN:
            value = text(data)
        elif number == 4 and kind == _VARINT:
            value = bool(data)
        elif number == 5 and kind == _LEN:
            value = read_struct(data)
        elif number == 6 and kind == _LEN:
            value = read_list(data)
        elif number == 1:
            value = None
    return value


def read_struct(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, kind, entry in fields(buf):
        if number != 1 or kind != _LEN:
            continue
        key, item = "", None
        for n, k, data in fields(entry):
            if n == 1 and k == _LEN:
                key = text(data)
            elif n == 2 and k == _LEN:
                item = read_value(data)
        out[key] = item
    return out


def read_list(buf: bytes) -> list[Any]:
    return [read_value(data) for number, kind, data in fields(buf)
            if number == 1 and kind == _LEN]


# ------------------------------------------------------------------------------ writing

def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def len_field(number: int, data: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(data)) + data


def write_string(text: str | bytes) -> bytes:
    """A ``String`` message (empty text is the empty message, as proto3 writes it)."""
    data = raw(text)
    return len_field(1, data) if data else b""


def write_value(value: Any) -> bytes:
    if value is None:
        return b""
    if value is True or value is False:
        return bytes((4 << 3 | _VARINT, 1 if value else 0))
    if isinstance(value, int | float):
        return bytes((2 << 3 | _I64,)) + _DOUBLE.pack(float(value))
    if isinstance(value, str | bytes | bytearray):
        return len_field(3, raw(value))
    if isinstance(value, Mapping):
        return len_field(5, write_struct(value))
    if isinstance(value, list | tuple):
        return len_field(6, write_list(value))
    raise unsendable(value)


def write_struct(mapping: Mapping[Any, Any]) -> bytes:
    out = bytearray()
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise bad_key(key)
        entry = len_field(1, raw(key)) + len_field(2, write_value(item))
        out += len_field(1, entry)
    return bytes(out)


def write_list(items: Any) -> bytes:
    return b"".join(len_field(1, write_value(item)) for item in items)


def write_kv(key: str, value: Any) -> bytes:
    out = len_field(1, raw(key)) if key else b""
    if value is not None:
        out += len_field(2, write_value(value))
    return out

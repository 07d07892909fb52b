"""ProtoBuf:1 framing: every message is a 4-byte little-endian length, then that many bytes.

Sans-IO and free of the ``protobuf`` package: bytes in, frames (payload bytes) out, and
payloads to bytes. A zero-length frame is legal and meaningful (an Empty result, the end of an
event). A length above the configured bound is a :class:`FrameError`: the stream cannot be
trusted any more, so the connection it came on is closed and nothing else is affected.
"""

from __future__ import annotations

import struct

from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME, FrameError

_LENGTH = struct.Struct("<I")
EMPTY_FRAME = _LENGTH.pack(0)


def frame(payload: bytes) -> bytes:
    """One frame: the payload's length (uint32, little-endian), then the payload."""
    return _LENGTH.pack(len(payload)) + payload


def frames(*payloads: bytes) -> bytes:
    """Several frames in one buffer, so they leave in one write."""
    return b"".join(_LENGTH.pack(len(p)) + p for p in payloads)


class FrameDecoder:
    """Incremental frame splitter for one connection."""

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes received that are not part of a complete frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Every frame completed by ``data``, in order (possibly none)."""
        buffer = self._buffer
        if not buffer and len(data) >= 4:
            # The usual case in lockstep: exactly one whole frame (Kong's answer, a call).
            (size,) = _LENGTH.unpack_from(data)
            if size == len(data) - 4 and size <= self._max_frame:
                return [data[4:]]
        buffer += data
        out: list[bytes] = []
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > self._max_frame:
                raise FrameError(f"frame of {size} bytes is larger than the "
                                 f"{self._max_frame}-byte limit")
            if end - start - 4 < size:
                break
            out.append(bytes(buffer[start + 4:start + 4 + size]))
            start += 4 + size
        if start:
            del buffer[:start]
        return out

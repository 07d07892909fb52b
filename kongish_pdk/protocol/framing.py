"""What both gateway protocols share below their codecs: the connection a session writes to,
the bound on one message, and the error that ends a connection whose bytes cannot be trusted.

Imports neither codec (``msgpack`` or the optional ``protobuf`` package).
"""

from __future__ import annotations

from typing import Protocol

# Largest message accepted from Kong, MsgPack:1 or ProtoBuf:1 (--max-frame-size).
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class FrameError(Exception):
    """The byte stream is unusable; close this connection."""


class Transport(Protocol):
    def write(self, data: bytes) -> bool:
        """Send all of ``data``; False if the connection is closed."""
        ...

    def pending_input(self) -> bool:
        """Whether bytes have arrived that nobody has read yet."""
        ...

    def close(self) -> None: ...

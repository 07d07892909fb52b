"""msgpack-rpc framing as Kong speaks it: bytes in, requests out; replies to bytes.

Decoding tolerates everything Kong's lua-MessagePack emits (kong-protocol.md 2.3): ``str16``
for short strings, strings that are not UTF-8 (kept losslessly as surrogate escapes and
written back as the same bytes), integer map keys, ``bin`` bodies. A frame larger than the
configured bound, or bytes that are not msgpack, are a :class:`FrameError`: the connection
they came on cannot be trusted any more, but nothing else is affected.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME, FrameError

__all__ = ["BadRequest", "Decoder", "Encoder", "Request", "parse"]

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

class Request(NamedTuple):
    msgid: int
    method: str
    params: list[Any]


class BadRequest(NamedTuple):
    """A well-framed message that is not a valid request, but whose msgid we can answer."""

    msgid: int
    reason: str


class Decoder:
    """Incremental decoder for one connection."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False,
            unicode_errors="surrogateescape",
            strict_map_key=False,
            max_buffer_size=max_frame,
            # msgpack's default first buffer is 1 MiB per connection; once freed, glibc keeps
            # such blocks on its heap and the process grows with every connection Kong opens.
            # Kong's messages are small: start at 16 KiB, grown on demand up to max_frame.
            read_size=min(16 * 1024, max_frame),
            use_list=True,
        )
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[Request | BadRequest]:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise FrameError(f"frame larger than the {self._max_frame}-byte limit") from None
        out: list[Request | BadRequest] = []
        try:
            for message in self._unpacker:
                # The common case inline: a 4-element request with a string method and
                # params list; anything else goes through parse() for a precise error.
                if (type(message) is list and len(message) == 4 and message[0] == REQUEST
                        and type(message[1]) is int and type(message[2]) is str
                        and type(message[3]) is list):
                    out.append(Request(message[1], message[2], message[3]))
                else:
                    out.append(parse(message))
        except FrameError:
            raise
        except msgpack.BufferFull:
            raise FrameError(f"frame larger than the {self._max_frame}-byte limit") from None
        except Exception as exc:
            raise FrameError(f"not msgpack: {type(exc).__name__}: {exc}") from None
        return out


def parse(message: Any) -> Request | BadRequest:
    """Check the ``[0, msgid, method, params]`` shape."""
    if not isinstance(message, list) or len(message) != 4:
        raise FrameError(f"expected a [0, msgid, method, params] array, got {_brief(message)}")
    kind, msgid, method, params = message
    if not isinstance(msgid, int) or isinstance(msgid, bool):
        raise FrameError(f"message id must be an integer, got {_brief(msgid)}")
    if kind != REQUEST:
        return BadRequest(msgid, f"expected a request (type 0), got type {kind!r}")
    if not isinstance(method, str):
        return BadRequest(msgid, f"method must be a string, got {_brief(method)}")
    if not isinstance(params, list):
        return BadRequest(msgid, f"params must be an array of positional arguments, "
                                 f"got {_brief(params)}")
    return Request(msgid, method, params)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Encoder:
    """Replies to bytes. Keeps one msgpack Packer (building one per message costs more than
    packing): a pack() of plain values runs entirely under the GIL and never yields to another
    greenlet, so concurrent replies on one connection cannot interleave inside it."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")

    def pack(self, value: Any) -> bytes:
        """Raises TypeError/ValueError/OverflowError for what msgpack cannot carry."""
        data: bytes = self._packer.pack(value)
        return data

    def response(self, msgid: int, error: str | None, result: Any) -> bytes:
        return self.pack([RESPONSE, msgid, error, result])

    def notification(self, label: str, argument: Any) -> bytes:
        return self.pack([NOTIFICATION, label, argument])

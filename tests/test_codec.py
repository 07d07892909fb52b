"""The MsgPack:1 codec and session without sockets: bytes in, bytes out."""

from __future__ import annotations

import io
import threading

import msgpack
import pytest

from kongish_pdk.protocol.framing import FrameError
from kongish_pdk.protocol.kong_msgpack import Session
from kongish_pdk.protocol.msgpack_rpc import BadRequest, Decoder, Encoder, Request
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.runtime.runtime import Runtime
from kongish_pdk.testing.luamsgpack import EMPTY_TABLE, LuaString, pack
from kongish_pdk.workers.pool import LockSlot


def test_requests_arrive_whole_however_the_bytes_are_cut() -> None:
    data = pack([0, 1, "plugin.Step", [{"EventId": 7, "Data": "a" * 40}]])  # str16 inside
    decoder = Decoder()
    got = [m for i in range(len(data)) for m in decoder.feed(data[i:i + 1])]
    assert got == [Request(1, "plugin.Step", [{"EventId": 7, "Data": "a" * 40}])]


def test_kongs_encoding_quirks_decode_losslessly() -> None:
    data = pack([0, 2, "plugin.Step", [{"EventId": 1, "Data": {
        "text": LuaString(b"caf\xe9"), "body": b"\xff\x00", 3: "int key", "empty": EMPTY_TABLE,
        "float": 1.5, "integral": 2.0}}]])
    (request,) = Decoder().feed(data)
    value = request.params[0]["Data"]
    assert value == {"text": "caf\udce9", "body": b"\xff\x00", 3: "int key", "empty": [],
                     "float": 1.5, "integral": 2}
    # ...and the odd string goes back out as the same bytes.
    assert Encoder().pack(value["text"]) == b"\xa4caf\xe9"


def test_lua_encoder_matches_kongs_bytes() -> None:
    # kong-protocol.md 7.2: CloseInstance and a Step without Data, byte for byte.
    assert pack([0, 6, "plugin.CloseInstance", [0]]).hex() == (
        "940006b4706c7567696e2e436c6f7365496e7374616e63659100")
    assert pack([0, 4, "plugin.Step", [{"EventId": 0}]]).hex() == (
        "940004ab706c7567696e2e53746570918" "1a74576656e74496400")
    assert pack("x" * 32)[:3] == b"\xda\x00\x20"  # str16, never str8


@pytest.mark.parametrize("data", [b"\xc1", msgpack.packb("text"), msgpack.packb([0, 1])])
def test_unusable_bytes_are_a_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        Decoder().feed(data)


def test_frames_are_bounded() -> None:
    decoder = Decoder(max_frame=1024)
    with pytest.raises(FrameError, match="1024-byte limit"):
        decoder.feed(msgpack.packb([0, 1, "x", ["y" * 2000]]))


def test_a_bad_request_with_an_id_is_answerable() -> None:
    assert Decoder().feed(msgpack.packb([0, 9, "plugin.GetStatus", "oops"])) == [
        BadRequest(9, "params must be an array of positional arguments, got 'oops'")]


class Recorder:
    """A transport that keeps what the session writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> bool:
        self.out += data
        return True

    def pending_input(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list:
        return list(msgpack.Unpacker(io.BytesIO(bytes(self.out)), raw=False))


@pytest.fixture
def session() -> tuple[Session, Recorder]:
    executor = LocalExecutor(lambda fn, *a: threading.Thread(target=fn, args=a).start(),
                             LockSlot, lua_style=False)
    transport = Recorder()
    return Session(Runtime([], executor), transport), transport


def test_session_greets_once_then_answers_in_order(session) -> None:
    sess, transport = session
    sess.data_received(msgpack.packb([0, 1, "plugin.GetStatus", []]) +
                       msgpack.packb([0, 2, "nope.Method", []]))
    sess.data_received(msgpack.packb([0, 3, "plugin.HandleEvent", [{"InstanceId": 5,
                                                                    "EventName": "access"}]]))
    greeting, status, unsupported, unknown = transport.messages()
    assert greeting[:2] == [2, "serverPid"]
    assert status[:3] == [1, 1, None] and status[3]["Plugins"] == {}
    assert unsupported == [1, 2, "RPC for nope is not supported", None]
    assert unknown == [1, 3, "no plugin instance #5", None]


def test_session_closes_its_connection_on_garbage(session) -> None:
    sess, transport = session
    sess.data_received(b"\xc1\xc1")
    assert transport.closed and transport.out == b""

"""ProtoBuf:1 without sockets: frames, Kong's exact bytes (kong-protocol.md 7.3), the PDK-call
table against the .proto, byte-tolerant strings, and a whole event through the session."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading

import pytest

pytest.importorskip("google.protobuf")

from google.protobuf import struct_pb2

from kongish_pdk.pdk.table import BY_NAME
from kongish_pdk.plugin.spec import build_spec
from kongish_pdk.protocol.protobuf import calls, codec, generate, values, wire
from kongish_pdk.protocol.protobuf.messages import pb
from kongish_pdk.protocol.protobuf.session import Session, _instance_status
from kongish_pdk.runtime.ids import IdCounter
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.runtime.runtime import Runtime, RuntimeOptions
from kongish_pdk.testing.pb_client import lua_name, service_table
from kongish_pdk.workers.pool import LockSlot


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


# Reference 7.3, frame by frame (length prefix included).
START_CALL = hexbytes("""30 00 00 00 08 02 8a 02 2b 0a 08 67 6f 2d 68 65 6c 6c 6f 12 1f 7b 22
    6d 65 73 73 61 67 65 22 3a 22 4b 6f 6e 67 21 22 2c 22 5f 5f 73 65 71 5f 5f 22 3a 31 7d""")
START_RETURN = hexbytes("17 00 00 00 08 02 8a 02 12 0a 08 67 6f 2d 68 65 6c 6c 6f 10 01 20 80 e2"
                        " cf aa 06")
HANDLE_CALL = hexbytes("0f 00 00 00 08 03 a2 02 0a 08 01 12 06 61 63 63 65 73 73")
GET_HEADER_NAME = hexbytes("17 00 00 00 6b 6f 6e 67 2e 72 65 71 75 65 73 74 2e 67 65 74 5f 68 65"
                           " 61 64 65 72")
GET_HEADER_ARGS = hexbytes("06 00 00 00 0a 04 68 6f 73 74")
GET_HEADER_ANSWER = hexbytes("0b 00 00 00 0a 09 6c 6f 63 61 6c 68 6f 73 74")
SET_HEADER_NAME = hexbytes("18 00 00 00 6b 6f 6e 67 2e 72 65 73 70 6f 6e 73 65 2e 73 65 74 5f 68"
                           " 65 61 64 65 72")
SET_HEADER_ARGS = hexbytes("1f 00 00 00 0a 0f 78 2d 68 65 6c 6c 6f 2d 66 72 6f 6d 2d 67 6f 12 0c"
                           " 1a 0a 47 6f 20 73 61 79 73 20 68 69")
EMPTY = hexbytes("00 00 00 00")
END_RETURN = hexbytes("02 00 00 00 08 03")
CLOSE_CALL = hexbytes("07 00 00 00 08 04 9a 02 02 08 01")


def only_frame(data: bytes) -> bytes:
    frames = codec.FrameDecoder().feed(data)
    assert len(frames) == 1
    return frames[0]


# ---------------------------------------------------------------- framing


def test_frames_are_little_endian_length_prefixed() -> None:
    assert codec.frame(b"") == EMPTY
    assert codec.frame(b"kong.request.get_header") == GET_HEADER_NAME
    assert codec.frames(b"", b"\x08\x03") == EMPTY + END_RETURN


def test_decoder_reassembles_frames_split_anywhere() -> None:
    stream = START_CALL + HANDLE_CALL + EMPTY + GET_HEADER_ANSWER + CLOSE_CALL
    expected = codec.FrameDecoder().feed(stream)
    assert len(expected) == 5 and expected[2] == b""
    for cut in range(1, len(stream)):
        decoder = codec.FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected
        assert decoder.pending == 0
    decoder = codec.FrameDecoder()
    assert [f for b in stream for f in decoder.feed(bytes([b]))] == expected


def test_a_frame_over_the_limit_is_refused_before_it_is_buffered() -> None:
    decoder = codec.FrameDecoder(max_frame=16)
    assert decoder.feed(codec.frame(b"x" * 16)) == [b"x" * 16]
    with pytest.raises(codec.FrameError, match="larger than the 16-byte limit"):
        decoder.feed(b"\x11\x00\x00\x00")


def test_one_answer_is_taken_whole_or_in_pieces() -> None:
    for cut in range(len(GET_HEADER_ANSWER) + 1):
        decoder = codec.FrameDecoder()
        first = decoder.feed(GET_HEADER_ANSWER[:cut])
        rest = decoder.feed(GET_HEADER_ANSWER[cut:])
        assert first + rest == [GET_HEADER_ANSWER[4:]]  # one piece completes it, once
        assert decoder.pending == 0
    assert codec.FrameDecoder().feed(EMPTY) == [b""]  # an empty answer is an answer


# ---------------------------------------------------------------- Kong's exact bytes (7.3)


def test_start_instance_call_and_return_bytes() -> None:
    call = pb.RpcCall.FromString(only_frame(START_CALL))
    assert call.sequence == 2 and call.WhichOneof("call") == "cmd_start_instance"
    assert call.cmd_start_instance.name == "go-hello"
    assert json.loads(call.cmd_start_instance.config) == {"message": "Kong!", "__seq__": 1}
    reply = pb.RpcReturn(sequence=2)
    _instance_status(reply, {"Name": "go-hello", "Id": 1, "StartTime": 1700000000.25})
    assert codec.frame(reply.SerializeToString()) == START_RETURN


def test_handle_event_and_close_instance_calls() -> None:
    call = pb.RpcCall.FromString(only_frame(HANDLE_CALL))
    assert call.sequence == 3
    assert (call.cmd_handle_event.instance_id, call.cmd_handle_event.event_name) == (1, "access")
    close = pb.RpcCall.FromString(only_frame(CLOSE_CALL))
    assert (close.sequence, close.cmd_close_instance.instance_id) == (4, 1)


def test_pdk_calls_encode_to_kongs_bytes() -> None:
    get = calls.lookup("kong.request.get_header")
    assert codec.frame(get.wire_name.encode()) == GET_HEADER_NAME
    assert codec.frame(get.encode("kong.request.get_header", ["host"])) == GET_HEADER_ARGS
    assert get.decode(only_frame(GET_HEADER_ANSWER)) == ("localhost", None)
    put = calls.lookup("kong.response.set_header")
    assert codec.frame(put.wire_name.encode()) == SET_HEADER_NAME
    args = put.encode("kong.response.set_header", ["x-hello-from-go", "Go says hi"])
    assert codec.frame(args) == SET_HEADER_ARGS
    assert put.decode(only_frame(EMPTY)) == (None, None)


# ---------------------------------------------------------------- the generated module


def test_generated_module_matches_the_proto() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install grpcio-tools)")
    assert not generate.is_stale(), "run python -m kongish_pdk.protocol.protobuf.generate"


def test_generated_module_was_made_from_the_proto_as_it_is() -> None:
    # Runs without grpcio-tools: catches an edited .proto that was not regenerated.
    assert generate.recorded_digest() == generate.proto_digest(), (
        "pluginsocket.proto changed: run python -m kongish_pdk.protocol.protobuf.generate")


def test_generated_module_is_kongs_package_without_a_runtime_version_guard() -> None:
    source = generate.MODULE.read_text("utf-8")
    assert "ValidateProtobufRuntimeVersion" not in source
    assert pb.DESCRIPTOR.package == "kong_plugin_protocol"
    assert pb.RpcCall.DESCRIPTOR.fields_by_name["cmd_handle_event"].number == 36
    assert pb.RpcReturn.DESCRIPTOR.fields_by_name["instance_status"].number == 33
    assert pb.PdkArg.DESCRIPTOR.fields_by_name["memory_stats"].number == 44


def test_msgpack_users_never_import_protobuf(tmp_path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "one.py").write_text("version = '1.0'\npriority = 1\n\nclass Plugin:\n"
                                    "    def __init__(self, config):\n        pass\n\n"
                                    "    def access(self, kong):\n        pass\n")
    # protobuf made unimportable: the MsgPack server, and any --dump, must not need it.
    script = ("import sys; sys.modules['google'] = None\n"
              "from kongish_pdk.cli import main\n"
              "import kongish_pdk.server.app, kongish_pdk.protocol.kong_msgpack\n"
              "sys.exit(main(sys.argv[1:]))\n")
    for protocol, name in (("msgpack", "MsgPack:1"), ("protobuf", "ProtoBuf:1")):
        done = subprocess.run([sys.executable, "-c", script, "-d", str(plugins), "--dump",
                               "--protocol", protocol], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["Protocol"] == name
    done = subprocess.run([sys.executable, "-c", script, "-d", str(plugins), "-p",
                           str(tmp_path), "--protocol", "protobuf"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "needs the protobuf package" in done.stderr


# ---------------------------------------------------------------- the PDK-call table


def test_every_row_is_a_pdk_function_and_agrees_with_service_kong() -> None:
    service = {name: entry for name, entry in service_table().items()}
    methods = pb.DESCRIPTOR.services_by_name["Kong"].methods_by_name
    for pdk_name, call in calls.CALLS.items():
        assert pdk_name in BY_NAME, pdk_name
        method = methods[call.rpc]
        assert call.input.type_name == method.input_type.full_name, pdk_name
        assert call.output.type_name == method.output_type.full_name, pdk_name
        assert service[call.wire_name][0] == call.rpc  # Kong resolves the name we send
        assert call.optional == ("None" in BY_NAME[pdk_name].returns)
        if pdk_name != "kong.response.error":  # sent as kong.response.exit (see calls._error)
            assert call.wire_name == pdk_name
    assert {c.rpc for c in calls.CALLS.values()} == set(methods)  # every RPC is reachable


def test_kongs_naming_rule_and_method_name_options() -> None:
    assert lua_name("Nginx_GetTls1VersionStr") == "kong.nginx.get_tls1_version_str"
    assert lua_name("Service_Request_SetRawBody") == "kong.service.request.set_raw_body"
    assert calls.wire_name("Ctx_GetShared", "kong.ctx.shared.get") == "kong.ctx.shared.get"
    assert calls.CALLS["kong.ctx.shared.set"].wire_name == "kong.ctx.shared.set"


@pytest.mark.parametrize("name", sorted(set(BY_NAME) - set(calls.CALLS)))
def test_functions_protobuf_cannot_carry_name_themselves_and_suggest_msgpack(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}\(\) cannot be called over ProtoBuf:1.*"
                                         r"--protocol msgpack"):
        calls.lookup(name)


def test_arguments_protobuf_cannot_carry_are_refused_by_name() -> None:
    call = calls.lookup("kong.request.get_raw_body")
    assert call.encode("kong.request.get_raw_body", []) == b""
    with pytest.raises(ValueError, match=r"max_allowed_file_size.*--protocol msgpack"):
        call.encode("kong.request.get_raw_body", [1024])


# ---------------------------------------------------------------- argument conversions


def parsed(message_type, data: bytes):
    return message_type.FromString(data)


def test_header_maps_keep_lists_and_max_defaults_to_100() -> None:
    headers = calls.lookup("kong.request.get_headers")
    assert parsed(pb.Int, headers.encode("kong.request.get_headers", [])).v == 100
    assert parsed(pb.Int, headers.encode("kong.request.get_headers", [7])).v == 7
    struct = struct_pb2.Struct()
    struct.fields["accept"].string_value = "*/*"
    struct.fields["x-multi"].list_value.values.add().string_value = "a"
    struct.fields["x-multi"].list_value.values.add().string_value = "b"
    struct.fields["flag"].bool_value = True
    value, _ = headers.decode(struct.SerializeToString())
    assert value == {"accept": "*/*", "x-multi": ["a", "b"], "flag": True}
    assert headers.decode(b"") == ({}, None)


def test_exit_carries_status_body_and_headers_and_json_encodes_dicts() -> None:
    exit_ = calls.lookup("kong.response.exit")
    args = parsed(pb.ExitArgs, exit_.encode("kong.response.exit",
                                            [403, "forbidden", {"x-reason": "py"}]))
    assert (args.status, args.body) == (403, b"forbidden")
    assert values.from_struct(args.headers) == {"x-reason": "py"}
    args = parsed(pb.ExitArgs, exit_.encode("kong.response.exit", [200, {"ok": True}]))
    assert json.loads(args.body) == {"ok": True}
    assert values.from_struct(args.headers) == {"Content-Type": calls.JSON_TYPE}
    assert parsed(pb.ExitArgs, exit_.encode("kong.response.exit", [204])).body == b""


def test_response_error_becomes_kongs_json_error_response() -> None:
    error = calls.lookup("kong.response.error")
    assert error.wire_name == "kong.response.exit"
    args = parsed(pb.ExitArgs, error.encode("kong.response.error", [500]))
    assert args.status == 500
    assert json.loads(args.body) == {"message": "An unexpected error occurred"}
    assert values.from_struct(args.headers) == {"Content-Type": calls.JSON_TYPE}
    args = parsed(pb.ExitArgs, error.encode("kong.response.error", [403, "go away"]))
    assert json.loads(args.body) == {"message": "go away"}
    args = parsed(pb.ExitArgs, error.encode("kong.response.error", [404]))
    assert json.loads(args.body) == {"message": "Not Found"}


def test_log_arguments_spread_as_a_list_and_kv_values_are_typed() -> None:
    log_args = parsed(struct_pb2.ListValue,
                      calls.lookup("kong.log.err").encode("kong.log.err", ["a", 1, 2.5, True]))
    assert [values.from_value(v) for v in log_args.values] == ["a", 1, 2.5, True]
    kv = parsed(pb.KV, calls.lookup("kong.ctx.shared.set").encode(
        "kong.ctx.shared.set", ["k", {"n": [1, "x", None]}]))
    assert kv.k == "k" and values.from_value(kv.v) == {"n": [1, "x", None]}
    unset = parsed(pb.KV, calls.lookup("kong.ctx.shared.set").encode("kong.ctx.shared.set",
                                                                      ["k", None]))
    assert not unset.HasField("v")  # Kong reads a missing Value as nil (null_value would not)


def test_target_consumer_spec_and_authenticate() -> None:
    target = parsed(pb.Target, calls.lookup("kong.service.set_target").encode(
        "kong.service.set_target", ["example.com", 8080]))
    assert (target.host, target.port) == ("example.com", 8080)
    spec = parsed(pb.ConsumerSpec, calls.lookup("kong.client.load_consumer").encode(
        "kong.client.load_consumer", ["alice", True]))
    assert (spec.id, spec.by_username) == ("alice", True)
    auth = parsed(pb.AuthenticateArgs, calls.lookup("kong.client.authenticate").encode(
        "kong.client.authenticate",
        [{"id": "c1", "username": "alice", "tags": ["t"], "unknown": 1}, {"id": "k1"}]))
    assert values.message_to_dict(auth) == {
        "consumer": {"id": "c1", "username": "alice", "tags": ["t"]},
        "credential": {"id": "k1"}}


# ---------------------------------------------------------------- result conversions


def test_empty_answers_mean_none_only_where_the_function_may_return_none() -> None:
    assert calls.lookup("kong.request.get_header").decode(b"") == (None, None)
    assert calls.lookup("kong.request.get_raw_query").decode(b"") == ("", None)
    assert calls.lookup("kong.request.get_port").decode(b"") == (0, None)
    assert calls.lookup("kong.client.get_port").decode(b"") == (None, None)
    assert calls.lookup("kong.ip.is_trusted").decode(b"") == (False, None)
    assert calls.lookup("kong.client.get_consumer").decode(b"") == (None, None)
    assert calls.lookup("kong.service.response.get_raw_body").decode(b"") == (b"", None)


def test_values_from_kong_including_its_null_value_one() -> None:
    get = calls.lookup("kong.ctx.shared.get")
    assert get.decode(struct_pb2.Value(null_value=0).SerializeToString()) == (None, None)
    assert get.decode(bytes([0x08, 0x01])) == (None, None)  # pb_rpc.lua sends null_value = 1
    assert get.decode(struct_pb2.Value(number_value=3.0).SerializeToString()) == (3, None)
    assert get.decode(struct_pb2.Value(number_value=1.5).SerializeToString()) == (1.5, None)


def test_raw_body_content_file_and_error(tmp_path) -> None:
    body = calls.lookup("kong.request.get_raw_body")
    assert body.decode(pb.RawBodyResult(content=b"\x00\xff").SerializeToString()) == (
        b"\x00\xff", None)
    spooled = tmp_path / "body"
    spooled.write_bytes(b"big body")
    assert body.decode(pb.RawBodyResult(body_filepath=str(spooled)).SerializeToString()) == (
        b"big body", None)
    assert body.decode(pb.RawBodyResult(error="too big").SerializeToString()) == (None, "too big")


def test_uri_captures_and_entities() -> None:
    captures = pb.UriCapturesResult(unnamed=[b"v1", b"\xff"])
    captures.named["version"] = b"v1"
    value, _ = calls.lookup("kong.request.get_uri_captures").decode(captures.SerializeToString())
    assert value == {"unnamed": ["v1", "\udcff"], "named": {"version": "v1"}}
    route = pb.Route(id="r1", paths=["/a"], strip_path=True)
    route.service.id = "s1"
    value, _ = calls.lookup("kong.router.get_route").decode(route.SerializeToString())
    assert value == {"id": "r1", "paths": ["/a"], "strip_path": True, "service": {"id": "s1"}}
    stats = pb.MemoryStats()
    stats.lua_shared_dicts.kong.capacity = 5
    stats.workers_lua_vms.add(pid=7, http_allocated_gc=9)
    value, _ = calls.lookup("kong.node.get_memory_stats").decode(stats.SerializeToString())
    assert value == {"lua_shared_dicts": {"kong": {"capacity": 5}},
                     "workers_lua_vms": [{"http_allocated_gc": 9, "pid": 7}]}


# ---------------------------------------------------------------- strings that are not UTF-8


SAMPLES = [None, True, False, 0, -3, 2.5, "", "héllo", [], {}, [1, "a", [None]],
           {"a": {"b": [True, "x"]}, "n": None}]


@pytest.mark.parametrize("value", SAMPLES)
def test_wire_writer_matches_protobuf_for_utf8(value) -> None:
    message = struct_pb2.Value()
    values.fill_value(message, value)
    assert struct_pb2.Value.FromString(wire.write_value(value)) == message
    assert wire.read_value(message.SerializeToString()) == values.from_value(message)


def test_bytes_that_are_not_utf8_survive_both_ways() -> None:
    raw = b"caf\xe9 \xff"
    text = raw.decode("utf-8", "surrogateescape")
    header = calls.lookup("kong.request.get_header")
    assert header.decode(b"\x0a" + bytes([len(raw)]) + raw) == (text, None)
    headers = calls.lookup("kong.request.get_headers")
    struct = wire.write_struct({"x-in": raw, "ok": ["a", raw]})
    assert headers.decode(struct) == ({"x-in": text, "ok": ["a", text]}, None)
    sent = calls.lookup("kong.response.set_header").encode("kong.response.set_header",
                                                           ["x-out", text])
    assert raw in sent
    assert wire.write_kv("x-out", raw) == sent
    exit_args = calls.lookup("kong.response.exit").encode("kong.response.exit",
                                                          [200, text, {"x": text}])
    assert exit_args.count(raw) == 2


# ---------------------------------------------------------------- a whole event, bytes in/out


class GoHello:
    def __init__(self, config):
        pass

    def access(self, kong):
        kong.request.get_header("host")
        kong.response.set_header("x-hello-from-go", "Go says hi")


class Recorder:
    """A transport that records writes and lets the test wait for them."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.changed = threading.Condition()

    def write(self, data: bytes) -> bool:
        with self.changed:
            self.data += data
            self.changed.notify_all()
        return not self.closed

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_for(self, size: int) -> bytes:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.data) >= size or self.closed, 10)
            out, self.data = self.data, b""
        return out


def spawn(fn, *args) -> None:
    threading.Thread(target=fn, args=args, daemon=True).start()


@pytest.fixture
def session_and_wire():
    spec = build_spec("go-hello", cls=GoHello, version="0.1", priority=1, schema=None,
                      source="test")
    runtime = Runtime([spec], LocalExecutor(spawn, LockSlot, False),
                      RuntimeOptions(event_timeout=5))
    runtime._instance_ids = IdCounter(1)  # the id of reference 7.3
    transport = Recorder()
    return Session(runtime, transport), transport, runtime


def test_the_event_of_reference_7_3_byte_for_byte(session_and_wire) -> None:
    session, transport, runtime = session_and_wire
    session.data_received(START_CALL)
    started = transport.wait_for(len(START_RETURN))
    assert started[:14] == START_RETURN[:14]  # up to started_at, which is the clock's
    session.data_received(HANDLE_CALL)
    assert transport.wait_for(len(GET_HEADER_NAME + GET_HEADER_ARGS)) == (
        GET_HEADER_NAME + GET_HEADER_ARGS)
    session.data_received(GET_HEADER_ANSWER)
    # set_header returns Empty: it does not wait for Kong's acknowledgement, so the end of
    # the event follows in the same write (the bytes of 7.3, in 7.3's order).
    sent = SET_HEADER_NAME + SET_HEADER_ARGS + EMPTY + END_RETURN
    assert transport.wait_for(len(sent)) == sent
    assert runtime.in_flight() == 0 and not session.settled
    session.data_received(EMPTY)  # Kong's acknowledgement of set_header
    assert session.settled
    session.data_received(CLOSE_CALL)
    closed = pb.RpcReturn.FromString(only_frame(transport.wait_for(4)))
    assert closed.sequence == 4 and closed.instance_status.instance_id == 1
    assert runtime.in_flight() == 0 and not transport.closed


def test_unknown_instance_closes_the_connection(session_and_wire) -> None:
    session, transport, _ = session_and_wire
    session.data_received(HANDLE_CALL)  # instance 1 was never started
    transport.wait_for(1)
    assert transport.closed and transport.data == b""


@pytest.mark.parametrize("garbage", [
    b"\x03\x00\x00\x00\xff\xff\xff",  # not an RpcCall
    b"\x00\x00\x00\x00",  # an RpcCall naming no command
    b"\xff\xff\xff\x7f",  # a frame of 2 GiB
])
def test_malformed_input_closes_only_this_session(session_and_wire, garbage: bytes) -> None:
    session, transport, _ = session_and_wire
    session.data_received(garbage)
    assert transport.closed and transport.data == b""


def test_an_answer_kong_cannot_have_sent_stops_the_event(session_and_wire) -> None:
    session, transport, runtime = session_and_wire
    session.data_received(START_CALL)
    transport.wait_for(len(START_RETURN))
    session.data_received(HANDLE_CALL)
    transport.wait_for(len(GET_HEADER_NAME + GET_HEADER_ARGS))
    session.data_received(codec.frame(b"\x0a\x20short"))  # String with a short payload
    assert transport.closed
    assert runtime.in_flight() == 0


# ---------------------------------------------------------------- calls that do not wait


def set_header(name: str, value: str) -> bytes:
    """A kong.response.set_header call's two frames, as the server sends them."""
    call = calls.lookup("kong.response.set_header")
    return call.name_frame + codec.frame(call.encode(call.wire_name, [name, value]))


GET_HOST = GET_HEADER_NAME + GET_HEADER_ARGS


class SetsThenReads:
    """Two calls that return Empty, then one whose answer matters, then one more."""

    def __init__(self, config):
        pass

    def access(self, kong):
        kong.response.set_header("a", "1")
        kong.response.set_header("b", "2")
        host = kong.request.get_header("host")
        kong.response.set_header("c", host)


class ManySets:
    def __init__(self, config):
        pass

    def access(self, kong):
        for n in range(40):
            kong.response.set_header("n", str(n))
        kong.request.get_header("host")


def session_for(cls) -> tuple[Session, Recorder, Runtime]:
    spec = build_spec("go-hello", cls=cls, version="0.1", priority=1, schema=None,
                      source="test")
    runtime = Runtime([spec], LocalExecutor(spawn, LockSlot, False),
                      RuntimeOptions(event_timeout=5))
    runtime._instance_ids = IdCounter(1)
    transport = Recorder()
    session = Session(runtime, transport)
    session.data_received(START_CALL)
    transport.wait_for(len(START_RETURN))
    return session, transport, runtime


@pytest.mark.parametrize("pieces", [1, 3, 7])
def test_calls_returning_empty_leave_with_the_next_call_and_their_acks_come_first(
        pieces: int) -> None:
    session, transport, runtime = session_for(SetsThenReads)
    session.data_received(HANDLE_CALL)
    sent = set_header("a", "1") + set_header("b", "2") + GET_HOST
    assert transport.wait_for(len(sent)) == sent  # one write: nothing waited for an ack
    # Kong acknowledges both sets, then answers get_header; in any number of pieces.
    incoming = EMPTY + EMPTY + GET_HEADER_ANSWER
    size = -(-len(incoming) // pieces)
    for start in range(0, len(incoming), size):
        session.data_received(incoming[start:start + size])
    sent = set_header("c", "localhost") + EMPTY + END_RETURN
    assert transport.wait_for(len(sent)) == sent
    assert runtime.in_flight() == 0 and not transport.closed
    assert not session.settled  # the last set is not acknowledged yet
    session.data_received(EMPTY + CLOSE_CALL)  # its ack, then Kong's next call
    assert pb.RpcReturn.FromString(only_frame(transport.wait_for(4))).sequence == 4
    assert session.settled


def test_at_most_32_calls_go_unacknowledged() -> None:
    session, transport, runtime = session_for(ManySets)
    session.data_received(HANDLE_CALL)
    # 32 calls leave without waiting; the 33rd waits for all 33 acknowledgements.
    first = b"".join(set_header("n", str(n)) for n in range(33))
    assert transport.wait_for(len(first)) == first
    session.data_received(EMPTY * 33)
    rest = b"".join(set_header("n", str(n)) for n in range(33, 40)) + GET_HOST
    assert transport.wait_for(len(rest)) == rest  # and nothing was written in between
    session.data_received(EMPTY * 7 + GET_HEADER_ANSWER)
    assert transport.wait_for(len(EMPTY + END_RETURN)) == EMPTY + END_RETURN
    assert runtime.in_flight() == 0 and session.settled


def test_a_frame_beyond_the_acknowledgements_and_the_answer_closes_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    session, transport, _ = session_for(SetsThenReads)
    session.data_received(HANDLE_CALL)
    transport.wait_for(len(set_header("a", "1") + set_header("b", "2") + GET_HOST))
    session.data_received(EMPTY + EMPTY + GET_HEADER_ANSWER + GET_HEADER_ANSWER)
    assert transport.closed  # one frame more than Kong owed: the lockstep is lost
    assert "Kong sent a frame while its event was not waiting" in caplog.text

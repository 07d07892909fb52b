"""mini-Kong's ProtoBuf:1 wire code (``lua/minikong/pb.lua``, ``pb_rpc.lua``) on its own.

No plugin server is involved: nginx's LuaJIT runs the Lua once (``minikong.run_lua``) on
the cases below and the results are compared with

* the exact frames of kong-protocol.md 7.3, transcribed here by hand, and
* Google's protobuf library (another implementation) serialising or parsing the same
  messages of ``pluginsocket.proto``,

so the encoder is proven independently of our server's Python code. Runs once (the
concurrency modes do not matter here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from kongish_pdk.protocol.protobuf.messages import pb

from .minikong import run_lua

pytestmark = pytest.mark.e2e


def h(text: str) -> str:
    """Hex as printed in the reference (spaces, line breaks) -> compact lowercase hex."""
    return "".join(text.split()).lower()


def framed(payload: bytes) -> str:
    return (len(payload).to_bytes(4, "little") + payload).hex()


def hexed(data: bytes) -> dict[str, str]:
    return {"$hex": data.hex()}


# ---------------------------------------------------------------------------- 7.3

START_CONFIG = '{"message":"Kong!","__seq__":1}'

REFERENCE_7_3 = {
    # K->S: what mini-Kong sends
    "start_instance": h("""30 00 00 00 08 02 8a 02 2b 0a 08 67 6f 2d 68 65 6c 6c 6f 12 1f 7b 22
        6d 65 73 73 61 67 65 22 3a 22 4b 6f 6e 67 21 22 2c 22 5f 5f 73 65 71 5f 5f 22 3a 31
        7d"""),
    "handle_event": h("0f 00 00 00 08 03 a2 02 0a 08 01 12 06 61 63 63 65 73 73"),
    "answer_localhost": h("0b 00 00 00 0a 09 6c 6f 63 61 6c 68 6f 73 74"),
    "answer_empty": h("00 00 00 00"),
    "close_instance": h("07 00 00 00 08 04 9a 02 02 08 01"),
    # S->K: what the server sends, encoded by the same encoder
    "return_status": h("""17 00 00 00 08 02 8a 02 12 0a 08 67 6f 2d 68 65 6c 6c 6f 10 01 20 80
        e2 cf aa 06"""),
    "args_string": h("06 00 00 00 0a 04 68 6f 73 74"),
    "args_kv": h("""1f 00 00 00 0a 0f 78 2d 68 65 6c 6c 6f 2d 66 72 6f 6d 2d 67 6f 12 0c 1a 0a
        47 6f 20 73 61 79 73 20 68 69"""),
    "return_end": h("02 00 00 00 08 03"),
}

CASES_7_3: list[dict[str, Any]] = [
    {"name": "start_instance", "op": "call", "sequence": 2, "command": "cmd_start_instance",
     "message": {"name": "go-hello", "config": START_CONFIG}},
    {"name": "handle_event", "op": "call", "sequence": 3, "command": "cmd_handle_event",
     "message": {"instance_id": 1, "event_name": "access"}},
    {"name": "answer_localhost", "op": "answer", "output": "String",
     "method": "kong.request.get_header", "value": "localhost"},
    {"name": "answer_empty", "op": "answer", "output": "Empty",
     "method": "kong.response.set_header"},
    {"name": "close_instance", "op": "call", "sequence": 4, "command": "cmd_close_instance",
     "message": {"instance_id": 1}},
    {"name": "return_status", "op": "encode", "type": "RpcReturn",
     "message": {"sequence": 2, "instance_status": {"name": "go-hello", "instance_id": 1,
                                                    "started_at": 1700000000}}},
    {"name": "args_string", "op": "encode", "type": "String", "message": {"v": "host"}},
    {"name": "args_kv", "op": "encode", "type": "KV",
     "message": {"k": "x-hello-from-go", "v": {"string_value": "Go says hi"}}},
    {"name": "return_end", "op": "encode", "type": "RpcReturn", "message": {"sequence": 3}},
    # ... and the server's frames read back the way the bridge loop reads them
    {"name": "read_return_status", "op": "decode", "type": "RpcReturn",
     "hex": REFERENCE_7_3["return_status"][8:]},
    {"name": "read_return_end", "op": "decode", "type": "RpcReturn",
     "hex": REFERENCE_7_3["return_end"][8:]},
    {"name": "unwrap_string", "op": "unwrap", "input": "String",
     "hex": REFERENCE_7_3["args_string"][8:]},
    {"name": "unwrap_kv", "op": "unwrap", "input": "KV", "hex": REFERENCE_7_3["args_kv"][8:]},
]

# ---------------------------------------------------------------------------- cross-checks

BODY = bytes(range(256))
ROUTE = {"id": "3f0c2a4e-0000-4000-8000-000000000001", "name": "p", "paths": ["/p"],
         "strip_path": False, "protocols": ["http"], "unknown_key": "ignored"}


def struct(mapping: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(mapping)
    return message


# (case, bytes Google's library makes of the same message: compared byte for byte)
ANSWERS: list[tuple[dict[str, Any], bytes]] = [
    ({"output": "Value", "method": "kong.ctx.shared.get"},  # nil: null_value = 1, as Kong
     bytes.fromhex("0801")),
    ({"output": "Value", "method": "kong.ctx.shared.get", "value": "v"},
     struct_pb2.Value(string_value="v").SerializeToString()),
    ({"output": "Bool", "method": "kong.ip.is_trusted", "value": False},  # false: explicit
     bytes.fromhex("0800")),
    ({"output": "Bool", "method": "kong.ip.is_trusted", "value": True},
     pb.Bool(v=True).SerializeToString()),
    ({"output": "Int", "method": "kong.response.get_status", "value": 404},
     pb.Int(v=404).SerializeToString()),
    ({"output": "Int", "method": "kong.response.get_status", "value": -5},  # 10-byte varint
     pb.Int(v=-5).SerializeToString()),
    ({"output": "Int", "method": "kong.response.get_status", "value": 0}, b""),
    ({"output": "Number", "method": "kong.request.get_http_version", "value": 1.1},
     pb.Number(v=1.1).SerializeToString()),
    ({"output": "Number", "method": "kong.nginx.req_start_time", "value": 1763712000.123},
     pb.Number(v=1763712000.123).SerializeToString()),
    ({"output": "String", "method": "kong.request.get_header"}, b""),  # nil
    ({"output": "String", "method": "kong.request.get_header", "value": hexed(b"caf\xe9")},
     bytes.fromhex("0a04") + b"caf\xe9"),  # raw bytes, as Kong sends them
    ({"output": "ByteString", "method": "kong.service.response.get_raw_body",
      "value": hexed(BODY)}, pb.ByteString(v=BODY).SerializeToString()),
    ({"output": "RawBodyResult", "method": "kong.request.get_raw_body", "value": hexed(BODY)},
     pb.RawBodyResult(content=BODY).SerializeToString()),
    # header multimaps go back to nginx's shape: one value a string, a query flag true
    ({"output": "Struct", "method": "kong.request.get_headers",
      "value": {"x-multi": ["one", "two"], "host": ["h"], "flag": []}},
     struct({"x-multi": ["one", "two"], "host": "h", "flag": True}).SerializeToString(
         deterministic=True)),
    ({"output": "Struct", "method": "kong.log.serialize_like",  # any other Struct: as is
      "value": {"a": {"b": [1, 2.5, "x", True]}, "n": -3}},
     struct({"a": {"b": [1, 2.5, "x", True]}, "n": -3}).SerializeToString(deterministic=True)),
    ({"output": "UriCapturesResult", "method": "kong.request.get_uri_captures",
      "value": {"unnamed": ["a", "b"], "named": {"x": "y", "k": "v"}}},
     pb.UriCapturesResult(unnamed=[b"a", b"b"], named={"x": b"y", "k": b"v"})
     .SerializeToString(deterministic=True)),
]


def test_the_lua_encoder_gives_the_exact_frames_of_the_reference(lua_results) -> None:
    results = lua_results
    for name, expected in REFERENCE_7_3.items():
        assert results[name] == expected, f"{name}: {results[name]} != {expected}"
    assert results["read_return_status"] == {
        "sequence": 2,
        "instance_status": {"name": "go-hello", "instance_id": 1, "started_at": 1700000000},
    }
    assert results["read_return_end"] == {"sequence": 3}
    assert results["unwrap_string"] == ["host"]
    assert results["unwrap_kv"] == ["x-hello-from-go", "Go says hi"]


def test_kongs_answers_match_googles_protobuf(lua_results) -> None:
    for i, (case, expected) in enumerate(ANSWERS):
        got = lua_results[f"answer{i}"]
        assert got == framed(expected), f"{case}: {got} != {framed(expected)}"


def test_an_entity_answer_keeps_the_fields_of_its_message(lua_results) -> None:
    payload = bytes.fromhex(lua_results["answer_route"])[4:]
    route = pb.Route.FromString(payload)  # unknown_key was left out, as lua-protobuf does
    assert route == pb.Route(id=ROUTE["id"], name="p", paths=["/p"], protocols=["http"])
    # lua-protobuf writes a false bool explicitly (kong-protocol.md 3.7): 0x60 0x00 is there
    assert bytes.fromhex("6000") in payload


def test_the_servers_messages_become_kongs_pdk_arguments(lua_results) -> None:
    assert lua_results["unwrap_exit"] == [418, hexed(b"\xffbinary\x00body"),
                                          {"x-probe-exit": "yes", "multi": ["a", "b"]}]
    # log varargs: numbers, strings, booleans; an empty Value is nil, and so is a false
    # bool (Kong reads `bool_value or string_value or number_value or null_value`)
    assert lua_results["unwrap_log"] == ["a", 1, 2.5, True, None, None]
    assert lua_results["unwrap_null"] == ["NULL_VALUE"]  # lua-protobuf's enum name (3.7)
    assert lua_results["unwrap_empty_int"] == [0]  # Kong would then refuse max_headers = 0
    assert lua_results["unwrap_target"] == ["example.test", 8443]
    assert lua_results["unwrap_kv_struct"] == ["k", {"nested": {"list": ["x", 2]}}]
    assert lua_results["unwrap_non_utf8"] == [hexed(b"caf\xe9\xff")]


def test_kongs_rpc_names_follow_its_naming_rule(lua_results) -> None:
    assert lua_results["service"] == {
        "kong.nginx.get_tls1_version_str": "Nginx_GetTls1VersionStr",
        "kong.ctx.shared.get": "Ctx_GetShared",
        "kong.service.request.set_raw_body": "Service_Request_SetRawBody",
        "kong.request.get_uri_captures": "Request_GetUriCaptures",
        "kong.plugin.get_id": None,  # no RPC: the server refuses it before sending
    }


# name -> (type, hex): input the decoder must refuse with a "pb: " error (no other case
# may be an error)
MALFORMED: dict[str, tuple[str, str]] = {
    "truncated_varint": ("Int", "08ff"),
    "field_past_the_end": ("String", "0a05616263"),
    "wrong_wire_type": ("String", "0801"),
    # a singular number sent length-delimited: not a packed list (Google's parser keeps it
    # as an unknown field and reads v = 0)
    "number_as_length_delimited": ("Int", "0a0108"),
    # ... and with a length past the end of the message
    "number_as_length_delimited_past_the_end": ("Int", "0a0508"),
}


def test_malformed_input_is_an_error_not_a_guess(lua_results) -> None:
    for name in MALFORMED:
        assert set(lua_results[name]) == {"error"}, lua_results[name]
        assert lua_results[name]["error"].startswith("pb: ")


# ---------------------------------------------------------------------------- running the Lua

def _cases() -> list[dict[str, Any]]:
    cases = list(CASES_7_3)
    for i, (case, _) in enumerate(ANSWERS):
        cases.append({"name": f"answer{i}", "op": "answer", **case})
    cases.append({"name": "answer_route", "op": "answer", "output": "Route",
                  "method": "kong.router.get_route", "value": ROUTE})
    exit_args = pb.ExitArgs(status=418, body=b"\xffbinary\x00body")
    exit_args.headers.update({"x-probe-exit": "yes", "multi": ["a", "b"]})
    log = struct_pb2.ListValue()
    log.extend(["a", 1, 2.5, True])
    log.values.add()  # an empty Value: None
    log.values.add().bool_value = False
    kv = pb.KV(k="k")
    kv.v.struct_value.update({"nested": {"list": ["x", 2]}})
    unwraps = {
        "unwrap_exit": ("ExitArgs", exit_args.SerializeToString()),
        "unwrap_log": ("ListValue", log.SerializeToString()),
        "unwrap_null": ("Value", struct_pb2.Value(null_value=0).SerializeToString()),
        "unwrap_empty_int": ("Int", b""),
        "unwrap_target": ("Target", pb.Target(host="example.test", port=8443)
                          .SerializeToString()),
        "unwrap_kv_struct": ("KV", kv.SerializeToString()),
        "unwrap_non_utf8": ("String", bytes.fromhex("0a05") + b"caf\xe9\xff"),
    }
    for name, (input_type, data) in unwraps.items():
        cases.append({"name": name, "op": "unwrap", "input": input_type, "hex": data.hex()})
    for name, (type_name, data) in MALFORMED.items():
        cases.append({"name": name, "op": "decode", "type": type_name, "hex": data})
    return cases


SERVICE_NAMES = ["kong.nginx.get_tls1_version_str", "kong.ctx.shared.get",
                 "kong.service.request.set_raw_body", "kong.request.get_uri_captures",
                 "kong.plugin.get_id"]


@pytest.fixture(scope="module")
def lua_results(gateway_prerequisites: None, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("pb-wire")
    tmp.chmod(0o755)
    cases_path, out_path = tmp / "cases.json", tmp / "results.json"
    cases_path.write_text(json.dumps({"cases": _cases()}))
    names = ", ".join(f'"{n}"' for n in SERVICE_NAMES)
    code = f"""
        require("minikong.selftest").run("{cases_path}", "{out_path}")
        local service, cjson = require("minikong.pb_rpc").SERVICE, require("cjson")
        local names = {{}}
        for _, name in ipairs({{ {names} }}) do
          names[name] = service[name] and service[name].rpc or cjson.null
        end
        local f = assert(io.open("{tmp / 'service.json'}", "wb"))
        f:write(cjson.encode(names))
        f:close()
    """
    done = run_lua(code, tmp / "nginx")
    assert done.returncode == 0, f"nginx/LuaJIT failed:\n{done.stdout}\n{done.stderr}"
    results: dict[str, Any] = json.loads(out_path.read_text())
    results["service"] = json.loads(Path(tmp / "service.json").read_text())
    errors = {name: r for name, r in results.items()
              if isinstance(r, dict) and set(r) == {"error"}}
    assert set(errors) == set(MALFORMED), errors
    return results

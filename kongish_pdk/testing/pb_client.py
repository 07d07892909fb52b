"""A client that drives a plugin server over ProtoBuf:1 the way Kong does (``pb_rpc.lua``).

It behaves like one Kong worker's RPC object (kong-protocol.md 3): frames of a 4-byte
little-endian length and a payload; ``RpcCall.sequence`` counting from 2; a whole event on one
connection in lockstep (HandleEvent, then for each PDK call a name frame and an args frame
answered by one frame, until an empty frame and the ``RpcReturn``); connections kept alive
only after a complete call; ``kong.response.exit`` never answered (the connection is
abandoned, as when Kong's coroutine yields); an RPC error seen as the connection closing.

PDK calls are resolved like Kong does it: through the ``service Kong`` block of
``pluginsocket.proto`` (by the Lua-style RPC name), with arguments unwrapped into positional
values and answers wrapped into the RPC's output message the way ``pb_rpc.lua`` does,
including its quirks: a ``false`` inside a ``Value`` reads as nil, ``null_value`` as the
string ``"NULL_VALUE"``, and a nil ``Value`` answer is sent as ``null_value = 1``.

The server side of the project does not share code with this module's conversions on
purpose, so the tests compare two independent readings of the same ``.proto``.
Needs the ``protobuf`` extra (import this module directly; ``kongish_pdk.testing`` does not).
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from kongish_pdk.protocol.protobuf.codec import FrameDecoder, frames
from kongish_pdk.protocol.protobuf.messages import pb
from kongish_pdk.protocol.protobuf.wire import lua_number
from kongish_pdk.testing.kong_worker import PDKAnswer, Trace, start_config
from kongish_pdk.testing.pool import PooledClient


class RemoteClosed(ConnectionError):
    """The server closed the connection: Kong's error text is ``closed``."""

    def __init__(self, during: str) -> None:
        super().__init__(f"closed (during {during})")


class MethodNotFound(LookupError):
    """The server asked for a PDK name Kong's .proto does not have (Kong answers 500)."""


@dataclass
class PBEventTrace(Trace):
    """What happened in one event, as Kong saw it (``ended_by``: "ret" or
    "kong.response.exit")."""

    frames: list[bytes] = field(default_factory=list)  # every frame the server sent


# --------------------------------------------------------------------- the service table

def lua_name(rpc: str) -> str:
    """Kong's ``load_service`` naming rule (kong-protocol.md 3.5)."""
    name = f"Kong.{rpc}".replace("_", ".")
    return re.sub(r"([a-z]\d*)([A-Z])", r"\1_\2", name).lower()


def service_table() -> dict[str, tuple[str, Any, Any]]:
    """PDK name -> (RPC name, input class, output class), read from ``service Kong``."""
    from google.protobuf import symbol_database

    classes = symbol_database.Default()
    table: dict[str, tuple[str, Any, Any]] = {}
    service = pb.DESCRIPTOR.services_by_name["Kong"]
    for method in service.methods:
        options = method.GetOptions()
        name = options.Extensions[pb.MethodName] if options.HasExtension(pb.MethodName) else ""
        table[name or lua_name(method.name)] = (
            method.name,
            classes.GetSymbol(method.input_type.full_name),
            classes.GetSymbol(method.output_type.full_name),
        )
    return table


# --------------------------------------------------------------------- pb_rpc.lua's wrapping

def _unwrap_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return [_unwrap_value(v) for v in value.list_value.values]
    if kind == "struct_value":
        return _unwrap_struct(value.struct_value)
    # Lua: v.bool_value or v.string_value or v.number_value or v.null_value
    if kind == "bool_value" and value.bool_value:
        return True
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return lua_number(value.number_value)
    if kind == "null_value":
        return "NULL_VALUE"  # lua-protobuf gives enum names
    return None


def _unwrap_struct(struct_value: Any) -> dict[str, Any]:
    out = {}
    for key, item in struct_value.fields.items():
        value = _unwrap_value(item)
        if value is not None:  # a nil value leaves no key in a Lua table
            out[key] = value
    return out


def _entity(message: Message) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return out


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def unwrap_args(message: Any) -> list[Any]:
    """Positional args as Kong's ``pb_unwrap`` hands them to the PDK function."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Empty":
        return []
    if name == "google.protobuf.ListValue":
        return [_unwrap_value(v) for v in message.values]
    if name == "google.protobuf.Struct":
        return [_unwrap_struct(message)]
    if name == "google.protobuf.Value":
        return [_unwrap_value(message)]
    if name == "kong_plugin_protocol.KV":
        value = _unwrap_value(message.v) if message.HasField("v") else None
        return [message.k, value]
    if name == "kong_plugin_protocol.ByteString":
        return [message.v]
    if name in ("kong_plugin_protocol.Bool", "kong_plugin_protocol.Int",
                "kong_plugin_protocol.Number", "kong_plugin_protocol.String"):
        return [message.v]
    if name == "kong_plugin_protocol.Target":
        return [message.host, message.port]
    if name == "kong_plugin_protocol.ExitArgs":
        headers = _unwrap_struct(message.headers) if message.HasField("headers") else None
        return [message.status, _text(message.body), headers]
    if name == "kong_plugin_protocol.ConsumerSpec":
        return [message.id, message.by_username]
    if name == "kong_plugin_protocol.AuthenticateArgs":
        return [_entity(message.consumer) if message.HasField("consumer") else None,
                _entity(message.credential) if message.HasField("credential") else None]
    return [_entity(message)]


def _wrap_value(value: Any, out: Any) -> None:
    if value is None:
        out.null_value = 1  # pb_rpc.lua: null_value = t == "nil" and 1 (not NULL_VALUE = 0)
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.string_value = value.decode("utf-8", "surrogateescape")
    elif isinstance(value, list | tuple):
        out.list_value.SetInParent()
        for item in value:
            _wrap_value(item, out.list_value.values.add())
    elif isinstance(value, dict):
        out.struct_value.SetInParent()
        for key, item in value.items():
            _wrap_value(item, out.struct_value.fields[key])
    else:
        raise TypeError(f"Kong cannot hold a {type(value).__name__}")


def wrap_result(output: Any, value: Any) -> bytes:
    """Kong's answer frame for a PDK result (``pb_wrap``; nil -> an empty frame)."""
    name = output.DESCRIPTOR.full_name
    if name == "google.protobuf.Empty":
        return b""
    if name == "google.protobuf.Value":
        message = struct_pb2.Value()
        _wrap_value(value, message)
        return bytes(message.SerializeToString())
    if value is None:
        return b""
    if name == "google.protobuf.Struct":
        message = struct_pb2.Struct()
        for key, item in value.items():
            _wrap_value(item, message.fields[key])
        return bytes(message.SerializeToString())
    if name == "kong_plugin_protocol.RawBodyResult":
        return bytes(pb.RawBodyResult(content=value).SerializeToString())
    if name == "kong_plugin_protocol.UriCapturesResult":
        message = pb.UriCapturesResult()
        message.unnamed.extend(_raw(v) for v in value.get("unnamed", []))
        for key, item in value.get("named", {}).items():
            message.named[key] = _raw(item)
        return bytes(message.SerializeToString())
    if hasattr(output, "DESCRIPTOR") and "v" in output.DESCRIPTOR.fields_by_name:
        return bytes(output(v=value).SerializeToString())
    message = output()
    _fill(message, value)
    return bytes(message.SerializeToString())


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def _fill(message: Any, mapping: dict[str, Any]) -> None:
    """lua-protobuf encodes the table's keys that the message has, and ignores the others."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in mapping.items():
        descriptor = fields.get(key)
        if descriptor is None or value is None:
            continue
        target = getattr(message, key)
        if isinstance(value, list):
            if descriptor.message_type is not None:
                for item in value:
                    _fill(target.add(), item)
            else:
                target.extend(value)
        elif isinstance(value, dict):
            _fill(target, value)
        else:
            setattr(message, key, value)


# --------------------------------------------------------------------- connections

class PBConnection:
    """One socket; one call at a time, like a Kong cosocket."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._decoder = FrameDecoder(2**32 - 1)  # Kong reads a frame of any length
        self._frames: collections.deque[bytes] = collections.deque()
        self.keepalive = True  # False once Kong would abandon it (exit, errors)

    def send_frames(self, *payloads: bytes) -> None:
        self.sock.sendall(frames(*payloads))

    def read_frame(self, during: str = "a read") -> bytes:
        while not self._frames:
            data = self.sock.recv(256 * 1024)
            if not data:
                raise RemoteClosed(during)
            self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()

    def close(self) -> None:
        self.sock.close()


class PBKongClient(PooledClient[PBConnection]):
    """A Kong worker's view of one ProtoBuf:1 plugin server."""

    def __init__(self, socket_path: str, *, timeout: float = 10.0, fast: bool = False) -> None:
        super().__init__(socket_path, timeout)
        # Benchmarks: skip decoding the arguments (the answer function gets []) and reuse
        # the encoded answer for the same (method, value), as MsgPack's C encoder saves there.
        self.fast = fast
        self._answers: dict[tuple[str, Any], bytes] = {}
        self._sequence = itertools.count(2)  # Kong's first RpcCall has sequence 2
        self.service = service_table()

    def _open(self) -> PBConnection:
        return PBConnection(self.socket_path, self.timeout)

    def __enter__(self) -> PBKongClient:
        return self

    # ------------------------------------------------------------------ RPCs

    def _rpc(self, conn: PBConnection, command: str, message: Message) -> int:
        """Send one RpcCall; returns its sequence."""
        sequence = next(self._sequence)
        call = pb.RpcCall(sequence=sequence)
        getattr(call, command).CopyFrom(message)
        conn.send_frames(call.SerializeToString())
        return sequence

    def _return(self, conn: PBConnection, sequence: int, during: str) -> Any:
        reply = pb.RpcReturn.FromString(conn.read_frame(during))
        if reply.sequence != sequence:  # Kong asserts this
            raise ConnectionError(f"RpcReturn sequence {reply.sequence} != {sequence}")
        return reply

    def start_instance(self, name: str, config: dict[str, Any] | None = None, *,
                       seq: int = 1, plugin_id: str | None = None) -> int:
        full = start_config(name, config, seq=seq, plugin_id=plugin_id)
        message = pb.CmdStartInstance(name=name, config=json.dumps(full).encode())
        reply = self.call("cmd_start_instance", message, "StartInstance")
        return int(reply.instance_status.instance_id)

    def close_instance(self, instance_id: int) -> Any:
        return self.call("cmd_close_instance", pb.CmdCloseInstance(instance_id=instance_id),
                         "CloseInstance")

    def call(self, command: str, message: Message, during: str | None = None) -> Any:
        """One RpcCall answered by one RpcReturn (all but HandleEvent); ``during`` names it
        in :class:`RemoteClosed` (default: ``command``)."""
        with self.connection() as conn:
            sequence = self._rpc(conn, command, message)
            return self._return(conn, sequence, during or command)

    def run_event(self, instance_id: int, phase: str, pdk: PDKAnswer) -> PBEventTrace:
        """Drive one event to its end on one connection, answering each PDK call with
        ``pdk(method, args)``. Raises :class:`RemoteClosed` if the server closes (Kong's
        ``closed``: it would reset the plugin's instances and retry)."""
        trace = PBEventTrace()
        with self.connection() as conn:
            sequence = self._rpc(conn, "cmd_handle_event",
                                 pb.CmdHandleEvent(instance_id=instance_id, event_name=phase))
            while True:
                name_frame = conn.read_frame("HandleEvent")
                trace.frames.append(name_frame)
                if not name_frame:
                    break
                args_frame = conn.read_frame("a PDK call")
                trace.frames.append(args_frame)
                method = name_frame.decode()
                entry = self.service.get(method)
                if entry is None:
                    conn.keepalive = False
                    raise MethodNotFound(f'method "{method}" not found')
                _, input_type, output_type = entry
                if self.fast and method != "kong.response.exit":
                    conn.send_frames(self._fast_answer(method, output_type, pdk(method, [])))
                    continue
                args = unwrap_args(input_type.FromString(args_frame))
                trace.calls.append((method, args))
                if method == "kong.response.exit":
                    # Kong yields the plugin's coroutine: the connection is never used again.
                    trace.ended_by, trace.exit_args = method, args
                    conn.keepalive = False
                    return trace
                conn.send_frames(wrap_result(output_type, pdk(method, args)))
            self._return(conn, sequence, "the end of the event")
        return trace

    def _fast_answer(self, method: str, output_type: Any, value: Any) -> bytes:
        try:
            return self._answers[method, value]
        except KeyError:
            data = self._answers[method, value] = wrap_result(output_type, value)
            return data
        except TypeError:  # unhashable
            return wrap_result(output_type, value)

    def handle_event(self, start: Callable[[], int], phase: str, pdk: PDKAnswer,
                     instance_id: int | None = None, retries: int = 3) -> tuple[int, PBEventTrace]:
        """Kong's ``handle_event``: on ``closed`` (or "no plugin instance") start a new
        instance and try again; returns the instance id used and the trace."""
        if instance_id is None:
            instance_id = start()
        for _ in range(retries):
            try:
                return instance_id, self.run_event(instance_id, phase, pdk)
            except RemoteClosed:
                instance_id = start()
        return instance_id, self.run_event(instance_id, phase, pdk)

    def send_raw(self, data: bytes) -> PBConnection:
        """A new connection that sends ``data`` and reads nothing (malformed-input tests)."""
        conn = PBConnection(self.socket_path, self.timeout)
        conn.sock.sendall(data)
        return conn

"""The PDK over ProtoBuf:1: each PDK function's RPC, and its argument and result conversion.

Kong maps the first frame of a PDK call (a Lua-style name) to an RPC of ``service Kong`` in
``pluginsocket.proto``, decodes the second frame as that RPC's input message and answers with
its output message (kong-protocol.md 3.5, 3.6). :data:`CALLS` is keyed by the PDK names of
``kongish_pdk/pdk/table.py`` (the one table of PDK names; a test checks every key is there
and that every row agrees with the ``service Kong`` block). A function missing here cannot
be called over ProtoBuf:1: :func:`lookup` raises a ``ValueError`` naming it, which reaches the
plugin's own PDK call before anything is sent.

Results: proto3 cannot tell nil from ``""``/``0``/``false`` (Kong sends an empty frame for
both), so an empty answer becomes ``None`` for functions whose table row says they may return
``None``, and the type's zero value otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, Protocol

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from kongish_pdk.pdk.table import BY_NAME, TERMINAL
from kongish_pdk.protocol.protobuf import values, wire
from kongish_pdk.protocol.protobuf.codec import frame
from kongish_pdk.protocol.protobuf.messages import pb, serialize

# (value, error): an error string makes the plugin's PDK call raise PDKError.
Result = tuple[Any, str | None]
Encode = Callable[[str, list[Any]], bytes]


class Decode(Protocol):
    """An output message -> (value, error); ``optional``: an empty message means None."""

    def __call__(self, payload: bytes, optional: bool) -> Result: ...


MSGPACK_HINT = "start the server with --protocol msgpack to use it"
DEFAULT_MAX = 100  # Kong's default max_headers/max_args; an empty Int would mean 0 (3.7)
JSON_TYPE = "application/json; charset=utf-8"


class NotCarried(ValueError):
    """A PDK call (or one of its arguments) that ProtoBuf:1 cannot carry."""


@dataclass(frozen=True, slots=True)
class Codec:
    """How one protobuf message type is built from arguments or read into a value."""

    type_name: str  # full name, as in the service descriptor: "kong_plugin_protocol.KV"
    encode: Encode | None = None
    decode: Decode | None = None


@dataclass(frozen=True, slots=True)
class PBCall:
    """One row: the RPC a PDK function goes through.

    ``encode`` and ``decode`` are the codecs' functions themselves (``decode`` with
    ``optional`` bound), not methods that call them: one Python call less per PDK call.
    """

    rpc: str  # the RPC of service Kong
    wire_name: str  # the first frame (Kong's Lua-style name of the RPC)
    input: Codec
    output: Codec
    optional: bool  # the PDK function may return None: an empty answer means None
    name_frame: bytes  # the first frame, length prefix included
    encode: Encode  # (PDK name, arguments) -> the input message
    decode: Callable[[bytes], Result]  # the output message -> (value, error)
    # Returns Empty (and Kong answers it at all, unlike exit): Kong's answer is an
    # acknowledgement, an empty frame that tells nothing.
    acknowledged_only: bool


# ----------------------------------------------------------------------- argument encoders

def _carried(name: str, args: list[Any], carried: int) -> list[Any]:
    """The first ``carried`` arguments, None for those not given; refuses the call if a later
    one is given (not None), since its RPC has no field for it."""
    given = len(args)
    if given == carried:
        return args
    if given < carried:
        return [*args, *[None] * (carried - given)]
    if any(a is not None for a in args[carried:]):
        params = BY_NAME[name].params[carried:]
        what = ", ".join(p.name for p in params) or "extra arguments"
        raise NotCarried(f"{name}(): ProtoBuf:1 cannot carry the argument(s) {what}; "
                         f"call it without them or {MSGPACK_HINT}")
    return args[:carried]


def _empty(name: str, args: list[Any]) -> bytes:
    _carried(name, args, 0)
    return b""


def _string(name: str, args: list[Any]) -> bytes:
    (value,) = _carried(name, args, 1)
    if not isinstance(value, str | bytes | bytearray):
        raise TypeError(f"{name}(): expected a string argument, got {type(value).__name__}")
    try:
        text = value if isinstance(value, str) else bytes(value).decode()
        return serialize(pb.String(v=text))
    except UnicodeError:
        return wire.write_string(bytes(value) if isinstance(value, bytearray) else value)


def _int(name: str, args: list[Any]) -> bytes:
    (value,) = _carried(name, args, 1)
    return serialize(pb.Int(v=value or 0))


def _max_int(name: str, args: list[Any]) -> bytes:
    (limit,) = _carried(name, args, 1)
    return serialize(pb.Int(v=DEFAULT_MAX if limit is None else limit))


def _bool(name: str, args: list[Any]) -> bytes:
    (value,) = _carried(name, args, 1)
    return serialize(pb.Bool(v=bool(value)))


def _bytes(name: str, args: list[Any]) -> bytes:
    (value,) = _carried(name, args, 1)
    return serialize(pb.ByteString(v=wire.raw(value)))


def _kv(name: str, args: list[Any]) -> bytes:
    key, value = _carried(name, args, 2)
    if not isinstance(key, str):
        raise TypeError(f"{name}(): the key must be a str, got {type(key).__name__}")
    message = pb.KV(k=key)
    try:
        if value is not None:
            values.fill_value(message.v, value)
        return serialize(message)
    except UnicodeError:
        return wire.write_kv(key, value)


def _list(name: str, args: list[Any]) -> bytes:
    message = struct_pb2.ListValue()
    try:
        values.fill_list(message, args)
        return serialize(message)
    except UnicodeError:
        return wire.write_list(args)


def _struct(name: str, args: list[Any]) -> bytes:
    (mapping,) = _carried(name, args, 1)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name}(): expected a dict, got {type(mapping).__name__}")
    message = struct_pb2.Struct()
    try:
        values.fill_struct(message, mapping)
        return serialize(message)
    except UnicodeError:
        return wire.write_struct(mapping)


def _status(status: Any, name: str = "") -> int:
    """``status`` if it is an int (a bool is not); else a TypeError, naming ``name()`` if given."""
    if not isinstance(status, int) or isinstance(status, bool):
        where = f"{name}(): " if name else ""
        raise TypeError(f"{where}the status must be an int, got {type(status).__name__}")
    return status


def _exit_args(status: int, body: Any, headers: Any) -> bytes:
    headers = dict(headers or {})
    if isinstance(body, Mapping):
        # Kong JSON-encodes a table body itself, but ExitArgs.body is bytes: do it here.
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = JSON_TYPE
    message = pb.ExitArgs(status=status, body=b"" if body is None else wire.raw(body))
    if headers:
        try:
            values.fill_struct(message.headers, headers)
        except UnicodeError:
            raw = wire.write_struct(headers)
            message.ClearField("headers")
            return serialize(message) + wire.len_field(3, raw)
    return serialize(message)


def _exit(name: str, args: list[Any]) -> bytes:
    status, body, headers = _carried(name, args, 3)
    return _exit_args(_status(status), body, headers)


def default_error_message(status: int) -> str:
    if status == 500:
        return "An unexpected error occurred"  # Kong's own wording (kong.response.error)
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"The upstream server responded with {status}"


def _error(name: str, args: list[Any]) -> bytes:
    """``kong.response.error`` has no RPC: send the JSON error response Kong would make.

    Kong picks the format from the request's Accept header; over ProtoBuf:1 we cannot ask,
    so this is always Kong's JSON form, ``{"message": ...}`` with its default texts.
    """
    status, message, headers = _carried(name, args, 3)
    status = _status(status, name)
    body = message if isinstance(message, Mapping) else {
        "message": default_error_message(status) if message is None else str(message)}
    return _exit_args(status, body, headers)


def _target(name: str, args: list[Any]) -> bytes:
    host, port = _carried(name, args, 2)
    return serialize(pb.Target(host=host, port=port))


def _consumer_spec(name: str, args: list[Any]) -> bytes:
    consumer_id, by_username = _carried(name, args, 2)
    return serialize(pb.ConsumerSpec(id=consumer_id, by_username=bool(by_username)))


def _authenticate(name: str, args: list[Any]) -> bytes:
    consumer, credential = _carried(name, args, 2)
    message = pb.AuthenticateArgs()
    if consumer is not None:
        values.fill_message(message.consumer, consumer)
    if credential is not None:
        values.fill_message(message.credential, credential)
    return serialize(message)


# ----------------------------------------------------------------------- result decoders

def _nothing(payload: bytes, optional: bool) -> Result:
    return None, None


def _scalar(message_type: Any, zero: Any) -> Decode:
    def decode(payload: bytes, optional: bool) -> Result:
        if not payload:
            return (None if optional else zero), None
        return message_type.FromString(payload).v, None

    return decode


def _string_result(payload: bytes, optional: bool) -> Result:
    if not payload:
        return (None if optional else ""), None
    try:
        return pb.String.FromString(payload).v, None
    except DecodeError:  # not UTF-8: keep the bytes as surrogate escapes
        return wire.read_string(payload), None


def _bytes_result(payload: bytes, optional: bool) -> Result:
    return pb.ByteString.FromString(payload).v, None  # an empty body is b"", not None


def _struct_result(payload: bytes, optional: bool) -> Result:
    try:
        message = struct_pb2.Struct.FromString(payload)
    except DecodeError:
        return wire.read_struct(payload), None
    return values.from_struct(message), None


def _value_result(payload: bytes, optional: bool) -> Result:
    try:
        message = struct_pb2.Value.FromString(payload)
    except DecodeError:
        return wire.read_value(payload), None
    return values.from_value(message), None


def _raw_body(payload: bytes, optional: bool) -> Result:
    message = pb.RawBodyResult.FromString(payload)
    kind = message.WhichOneof("kind")
    if kind == "content":
        return message.content, None
    if kind == "body_filepath":
        # nginx spooled the body to a file on this host; read it as go-pdk does.
        try:
            with open(message.body_filepath, "rb") as body:
                return body.read(), None
        except OSError as exc:
            return None, f"cannot read the request body file {message.body_filepath}: {exc}"
    if kind == "error":
        return None, message.error
    return b"", None


def _uri_captures(payload: bytes, optional: bool) -> Result:
    message = pb.UriCapturesResult.FromString(payload)
    text = wire.text  # captures are raw bytes; give str as over MsgPack:1
    return {"unnamed": [text(v) for v in message.unnamed],
            "named": {k: text(v) for k, v in message.named.items()}}, None


def _entity(message_type: Any) -> Decode:
    def decode(payload: bytes, optional: bool) -> Result:
        if not payload:
            return None, None  # no consumer/credential/route: Kong's nil
        return values.message_to_dict(message_type.FromString(payload)), None

    return decode


# ----------------------------------------------------------------------- the message types

def _name(message_type: Any) -> str:
    return str(message_type.DESCRIPTOR.full_name)


EMPTY_IN = Codec("google.protobuf.Empty", encode=_empty)
STRING_IN = Codec(_name(pb.String), encode=_string)
INT_IN = Codec(_name(pb.Int), encode=_int)
MAX_IN = Codec(_name(pb.Int), encode=_max_int)
BOOL_IN = Codec(_name(pb.Bool), encode=_bool)
BYTES_IN = Codec(_name(pb.ByteString), encode=_bytes)
KV_IN = Codec(_name(pb.KV), encode=_kv)
LIST_IN = Codec("google.protobuf.ListValue", encode=_list)
STRUCT_IN = Codec("google.protobuf.Struct", encode=_struct)
EXIT_IN = Codec(_name(pb.ExitArgs), encode=_exit)
ERROR_IN = Codec(_name(pb.ExitArgs), encode=_error)
TARGET_IN = Codec(_name(pb.Target), encode=_target)
CONSUMER_SPEC_IN = Codec(_name(pb.ConsumerSpec), encode=_consumer_spec)
AUTHENTICATE_IN = Codec(_name(pb.AuthenticateArgs), encode=_authenticate)

EMPTY_OUT = Codec("google.protobuf.Empty", decode=_nothing)
STRING_OUT = Codec(_name(pb.String), decode=_string_result)
INT_OUT = Codec(_name(pb.Int), decode=_scalar(pb.Int, 0))
NUMBER_OUT = Codec(_name(pb.Number), decode=_scalar(pb.Number, 0.0))
BOOL_OUT = Codec(_name(pb.Bool), decode=_scalar(pb.Bool, False))
BYTES_OUT = Codec(_name(pb.ByteString), decode=_bytes_result)
STRUCT_OUT = Codec("google.protobuf.Struct", decode=_struct_result)
VALUE_OUT = Codec("google.protobuf.Value", decode=_value_result)
RAW_BODY_OUT = Codec(_name(pb.RawBodyResult), decode=_raw_body)
URI_CAPTURES_OUT = Codec(_name(pb.UriCapturesResult), decode=_uri_captures)
CREDENTIAL_OUT = Codec(_name(pb.AuthenticatedCredential),
                       decode=_entity(pb.AuthenticatedCredential))
CONSUMER_OUT = Codec(_name(pb.Consumer), decode=_entity(pb.Consumer))
ROUTE_OUT = Codec(_name(pb.Route), decode=_entity(pb.Route))
SERVICE_OUT = Codec(_name(pb.Service), decode=_entity(pb.Service))
MEMORY_OUT = Codec(_name(pb.MemoryStats), decode=_entity(pb.MemoryStats))


# ----------------------------------------------------------------------- the table

def wire_name(rpc: str, method_name: str | None = None) -> str:
    """Kong's Lua-style name of an RPC (kong-protocol.md 3.5): the first frame of a call."""
    if method_name:
        return method_name
    name = f"Kong.{rpc}".replace("_", ".")
    return re.sub(r"([a-z]\d*)([A-Z])", r"\1_\2", name).lower()


# Kong's two RPCs whose name is set by the MethodName option instead of the rule.
_METHOD_NAMES = {"Ctx_SetShared": "kong.ctx.shared.set", "Ctx_GetShared": "kong.ctx.shared.get"}

_ROWS: tuple[tuple[str, str, Codec, Codec], ...] = (
    ("kong.client.get_ip", "Client_GetIp", EMPTY_IN, STRING_OUT),
    ("kong.client.get_forwarded_ip", "Client_GetForwardedIp", EMPTY_IN, STRING_OUT),
    ("kong.client.get_port", "Client_GetPort", EMPTY_IN, INT_OUT),
    ("kong.client.get_forwarded_port", "Client_GetForwardedPort", EMPTY_IN, INT_OUT),
    ("kong.client.get_credential", "Client_GetCredential", EMPTY_IN, CREDENTIAL_OUT),
    ("kong.client.load_consumer", "Client_LoadConsumer", CONSUMER_SPEC_IN, CONSUMER_OUT),
    ("kong.client.get_consumer", "Client_GetConsumer", EMPTY_IN, CONSUMER_OUT),
    ("kong.client.authenticate", "Client_Authenticate", AUTHENTICATE_IN, EMPTY_OUT),
    ("kong.client.get_protocol", "Client_GetProtocol", BOOL_IN, STRING_OUT),
    ("kong.ctx.shared.set", "Ctx_SetShared", KV_IN, EMPTY_OUT),
    ("kong.ctx.shared.get", "Ctx_GetShared", STRING_IN, VALUE_OUT),
    ("kong.ip.is_trusted", "Ip_IsTrusted", STRING_IN, BOOL_OUT),
    ("kong.log.alert", "Log_Alert", LIST_IN, EMPTY_OUT),
    ("kong.log.crit", "Log_Crit", LIST_IN, EMPTY_OUT),
    ("kong.log.err", "Log_Err", LIST_IN, EMPTY_OUT),
    ("kong.log.warn", "Log_Warn", LIST_IN, EMPTY_OUT),
    ("kong.log.notice", "Log_Notice", LIST_IN, EMPTY_OUT),
    ("kong.log.info", "Log_Info", LIST_IN, EMPTY_OUT),
    ("kong.log.debug", "Log_Debug", LIST_IN, EMPTY_OUT),
    ("kong.log.set_serialize_value", "Log_SetSerializeValue", KV_IN, EMPTY_OUT),
    ("kong.log.serialize", "Log_Serialize", EMPTY_IN, STRING_OUT),
    ("kong.nginx.get_var", "Nginx_GetVar", STRING_IN, STRING_OUT),
    ("kong.nginx.get_tls1_version_str", "Nginx_GetTls1VersionStr", EMPTY_IN, STRING_OUT),
    ("kong.nginx.set_ctx", "Nginx_SetCtx", KV_IN, STRING_OUT),
    ("kong.nginx.get_ctx", "Nginx_GetCtx", STRING_IN, VALUE_OUT),
    ("kong.nginx.req_start_time", "Nginx_ReqStartTime", EMPTY_IN, NUMBER_OUT),
    ("kong.nginx.get_subsystem", "Nginx_GetSubsystem", EMPTY_IN, STRING_OUT),
    ("kong.node.get_id", "Node_GetId", EMPTY_IN, STRING_OUT),
    ("kong.node.get_memory_stats", "Node_GetMemoryStats", EMPTY_IN, MEMORY_OUT),
    ("kong.request.get_scheme", "Request_GetScheme", EMPTY_IN, STRING_OUT),
    ("kong.request.get_host", "Request_GetHost", EMPTY_IN, STRING_OUT),
    ("kong.request.get_port", "Request_GetPort", EMPTY_IN, INT_OUT),
    ("kong.request.get_forwarded_scheme", "Request_GetForwardedScheme", EMPTY_IN, STRING_OUT),
    ("kong.request.get_forwarded_host", "Request_GetForwardedHost", EMPTY_IN, STRING_OUT),
    ("kong.request.get_forwarded_port", "Request_GetForwardedPort", EMPTY_IN, INT_OUT),
    ("kong.request.get_http_version", "Request_GetHttpVersion", EMPTY_IN, NUMBER_OUT),
    ("kong.request.get_method", "Request_GetMethod", EMPTY_IN, STRING_OUT),
    ("kong.request.get_path", "Request_GetPath", EMPTY_IN, STRING_OUT),
    ("kong.request.get_path_with_query", "Request_GetPathWithQuery", EMPTY_IN, STRING_OUT),
    ("kong.request.get_raw_query", "Request_GetRawQuery", EMPTY_IN, STRING_OUT),
    ("kong.request.get_query_arg", "Request_GetQueryArg", STRING_IN, STRING_OUT),
    ("kong.request.get_query", "Request_GetQuery", MAX_IN, STRUCT_OUT),
    ("kong.request.get_header", "Request_GetHeader", STRING_IN, STRING_OUT),
    ("kong.request.get_headers", "Request_GetHeaders", MAX_IN, STRUCT_OUT),
    ("kong.request.get_raw_body", "Request_GetRawBody", EMPTY_IN, RAW_BODY_OUT),
    ("kong.request.get_uri_captures", "Request_GetUriCaptures", EMPTY_IN, URI_CAPTURES_OUT),
    ("kong.response.get_status", "Response_GetStatus", EMPTY_IN, INT_OUT),
    ("kong.response.get_header", "Response_GetHeader", STRING_IN, STRING_OUT),
    ("kong.response.get_headers", "Response_GetHeaders", MAX_IN, STRUCT_OUT),
    ("kong.response.get_source", "Response_GetSource", EMPTY_IN, STRING_OUT),
    ("kong.response.set_status", "Response_SetStatus", INT_IN, EMPTY_OUT),
    ("kong.response.set_header", "Response_SetHeader", KV_IN, EMPTY_OUT),
    ("kong.response.add_header", "Response_AddHeader", KV_IN, EMPTY_OUT),
    ("kong.response.clear_header", "Response_ClearHeader", STRING_IN, EMPTY_OUT),
    ("kong.response.set_headers", "Response_SetHeaders", STRUCT_IN, EMPTY_OUT),
    ("kong.response.exit", "Response_Exit", EXIT_IN, EMPTY_OUT),
    # No RPC of its own: Kong's JSON error response through Response_Exit (see _error).
    ("kong.response.error", "Response_Exit", ERROR_IN, EMPTY_OUT),
    ("kong.router.get_route", "Router_GetRoute", EMPTY_IN, ROUTE_OUT),
    ("kong.router.get_service", "Router_GetService", EMPTY_IN, SERVICE_OUT),
    ("kong.service.set_upstream", "Service_SetUpstream", STRING_IN, BOOL_OUT),
    ("kong.service.set_target", "Service_SetTarget", TARGET_IN, EMPTY_OUT),
    ("kong.service.request.set_scheme", "Service_Request_SetScheme", STRING_IN, EMPTY_OUT),
    ("kong.service.request.set_path", "Service_Request_SetPath", STRING_IN, EMPTY_OUT),
    ("kong.service.request.set_raw_query", "Service_Request_SetRawQuery", STRING_IN, EMPTY_OUT),
    ("kong.service.request.set_method", "Service_Request_SetMethod", STRING_IN, EMPTY_OUT),
    ("kong.service.request.set_query", "Service_Request_SetQuery", STRUCT_IN, EMPTY_OUT),
    ("kong.service.request.set_header", "Service_Request_SetHeader", KV_IN, EMPTY_OUT),
    ("kong.service.request.add_header", "Service_Request_AddHeader", KV_IN, EMPTY_OUT),
    ("kong.service.request.clear_header", "Service_Request_ClearHeader", STRING_IN, EMPTY_OUT),
    ("kong.service.request.set_headers", "Service_Request_SetHeaders", STRUCT_IN, EMPTY_OUT),
    ("kong.service.request.set_raw_body", "Service_Request_SetRawBody", BYTES_IN, EMPTY_OUT),
    ("kong.service.response.get_status", "Service_Response_GetStatus", EMPTY_IN, INT_OUT),
    ("kong.service.response.get_header", "Service_Response_GetHeader", STRING_IN, STRING_OUT),
    ("kong.service.response.get_headers", "Service_Response_GetHeaders", MAX_IN, STRUCT_OUT),
    ("kong.service.response.get_raw_body", "Service_Response_GetRawBody", EMPTY_IN, BYTES_OUT),
)


def _build() -> dict[str, PBCall]:
    table: dict[str, PBCall] = {}
    for pdk_name, rpc, inp, out in _ROWS:
        fn = BY_NAME[pdk_name]
        name = wire_name(rpc, _METHOD_NAMES.get(rpc))
        optional = "None" in fn.returns
        assert inp.encode is not None and out.decode is not None, rpc
        table[pdk_name] = PBCall(rpc, name, inp, out, optional, frame(name.encode()),
                                 inp.encode, partial(out.decode, optional=optional),
                                 out is EMPTY_OUT and pdk_name not in TERMINAL)
    return table


CALLS: dict[str, PBCall] = _build()


def check(name: str, args: list[Any]) -> None:
    """Raise (NotCarried, TypeError, ValueError) if this call cannot be sent to Kong."""
    lookup(name).encode(name, args)


def lookup(name: str) -> PBCall:
    """The row of a PDK function; a clear error if ProtoBuf:1 cannot carry it."""
    call = CALLS.get(name)
    if call is None:
        raise NotCarried(f"{name}() cannot be called over ProtoBuf:1: Kong's ProtoBuf protocol "
                         f"has no RPC for it; {MSGPACK_HINT}")
    return call

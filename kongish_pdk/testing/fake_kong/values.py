"""Kong's value conventions the namespaces share: cjson, the wire round trip, header checks,
body parsing."""

from __future__ import annotations

import json
from typing import Any

from kongish_pdk.protocol.msgpack_rpc import REQUEST, Decoder, Encoder, Request
from kongish_pdk.testing.errors import KongLuaError, NotInKit
from kongish_pdk.testing.http import header_value_text, parse_query

JSON_TYPE = "application/json; charset=utf-8"


def cjson(value: Any) -> bytes:
    """cjson.encode as Kong uses it: compact, and '/' escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace(
        "/", "\\/").encode()


def wire_copy(value: Any) -> Any:
    """The value as it comes back after a trip through msgpack (tuples become lists).

    Encoded and decoded by the server's own codec (non-UTF-8 strings survive as surrogate
    escapes); raises TypeError for what the protocol cannot carry, exactly where the real
    server's encoder would raise inside the plugin's PDK call.
    """
    try:
        packed = Encoder().pack([REQUEST, 0, "", [value]])
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot be sent to Kong: {exc}") from None
    (decoded,) = Decoder().feed(packed)  # the value as the server reads an answer's params
    assert isinstance(decoded, Request)
    return decoded.params[0]


def check_header(name: Any, value: Any, fn: str) -> list[str]:
    if not isinstance(name, str):
        raise KongLuaError(f"{fn}: header name must be a string")
    if isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            raise KongLuaError(f'{fn}: invalid header value in array "{name}": expected string')
        return list(value)
    if not isinstance(value, str | int | float | bool):
        raise KongLuaError(f'{fn}: invalid header value for "{name}": got '
                           f"{type(value).__name__}, expected array of string, string, "
                           f"number or boolean")
    return [header_value_text(value)]


def parse_body(body: bytes, content_type: str | None) -> Any:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            return json.loads(body or b"null")
        except ValueError:
            return None
    if kind == "application/x-www-form-urlencoded":
        return parse_query(body.decode("utf-8", "replace"))
    if kind.startswith("multipart/"):
        raise NotInKit("the kit does not parse multipart bodies; use get_raw_body()")
    return None

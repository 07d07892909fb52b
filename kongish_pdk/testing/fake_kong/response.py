"""kong.response: the client's response, and exit/error that end the request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kongish_pdk.testing.errors import KongLuaError
from kongish_pdk.testing.fake_kong.state import StateBacked
from kongish_pdk.testing.fake_kong.values import JSON_TYPE, check_header, cjson
from kongish_pdk.testing.http import first, header_key, lua_multimap

_ERROR_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 408: "Request timeout", 409: "Conflict",
    413: "Payload too large", 415: "Unsupported media type", 429: "Too many requests",
    500: "An unexpected error occurred", 501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}


class ResponseMixin(StateBacked):
    """``kong.response``."""

    def pdk_response_get_status(self, args: list[Any]) -> Any:
        return self.state.status

    def pdk_response_get_header(self, args: list[Any]) -> Any:
        return first(self.state.response_headers, args[0])

    def pdk_response_get_headers(self, args: list[Any]) -> Any:
        limit = args[0] if args else 100
        return dict(list(lua_multimap(self.state.response_headers).items())[:limit])

    def pdk_response_get_source(self, args: list[Any]) -> Any:
        return self.state.source

    def pdk_response_set_status(self, args: list[Any]) -> Any:
        status = args[0]
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise KongLuaError("kong.response.set_status: code must be a number between 100 "
                               "and 599")
        self.state.status = status
        return None

    def pdk_response_set_header(self, args: list[Any]) -> Any:
        values = check_header(args[0], args[1], "kong.response.set_header")
        if header_key(args[0]) != "transfer-encoding":  # Kong ignores it, with a warning
            self.state.change_header("set", args[0], values)
        return None

    def pdk_response_add_header(self, args: list[Any]) -> Any:
        values = check_header(args[0], args[1], "kong.response.add_header")
        self.state.change_header("add", args[0], values)
        return None

    def pdk_response_clear_header(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.response.clear_header: header name must be a string")
        self.state.change_header("clear", args[0], [])
        return None

    def pdk_response_set_headers(self, args: list[Any]) -> Any:
        headers = args[0] or {}
        if not isinstance(headers, Mapping):
            raise KongLuaError("kong.response.set_headers: headers must be a table")
        checked = {n: check_header(n, v, "kong.response.set_headers") for n, v in
                   headers.items()}
        for name in sorted(checked):
            self.state.change_header("set", name, checked[name])
        return None

    def pdk_response_exit(self, args: list[Any]) -> Any:
        status = args[0]
        body = args[1] if len(args) > 1 else None
        headers = args[2] if len(args) > 2 else None
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise KongLuaError("kong.response.exit: code must be a number between 100 and 599")
        out = {header_key(n): check_header(n, v, "kong.response.exit")
               for n, v in (headers or {}).items()}
        if isinstance(body, Mapping | list):
            payload = cjson(body)
            out.setdefault("content-type", [JSON_TYPE])
        elif isinstance(body, str):
            payload = body.encode("utf-8", "surrogateescape")
        elif isinstance(body, bytes):
            payload = body
        elif body is None:
            payload = b""
        else:
            raise KongLuaError("kong.response.exit: body must be a nil, string or table")
        self.state.finish("kong.response.exit", status, payload, out)
        return None

    def pdk_response_error(self, args: list[Any]) -> Any:
        status = args[0]
        message = args[1] if len(args) > 1 else None
        headers = args[2] if len(args) > 2 else None
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise KongLuaError("kong.response.error: code must be a number between 400 and 599")
        if message is None:
            message = _ERROR_MESSAGES.get(status, f"The upstream server responded with {status}")
        body = message if isinstance(message, Mapping) else {"message": message}
        out = {header_key(n): check_header(n, v, "kong.response.error")
               for n, v in (headers or {}).items()}
        out["content-type"] = [JSON_TYPE]
        self.state.finish("kong.response.error", status, cjson(body), out)
        return None

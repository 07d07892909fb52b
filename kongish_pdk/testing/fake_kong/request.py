"""kong.request: the client's request, as Kong received it."""

from __future__ import annotations

from typing import Any

from kongish_pdk.testing.errors import KongLuaError
from kongish_pdk.testing.fake_kong.state import StateBacked
from kongish_pdk.testing.fake_kong.values import parse_body
from kongish_pdk.testing.http import first, lua_multimap, normalize_path, parse_query


class RequestMixin(StateBacked):
    """``kong.request``."""

    def pdk_request_get_scheme(self, args: list[Any]) -> Any:
        return self.state.request.scheme.lower()

    pdk_request_get_forwarded_scheme = pdk_request_get_scheme

    def pdk_request_get_host(self, args: list[Any]) -> Any:
        host = first(self.state.headers, "host") or self.state.request.host
        return host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.lower()

    pdk_request_get_forwarded_host = pdk_request_get_host

    def pdk_request_get_port(self, args: list[Any]) -> Any:
        return self.state.request.port

    pdk_request_get_forwarded_port = pdk_request_get_port

    def pdk_request_get_forwarded_path(self, args: list[Any]) -> Any:
        return normalize_path(self.state.raw_path)

    def pdk_request_get_forwarded_prefix(self, args: list[Any]) -> Any:
        return None

    def pdk_request_get_http_version(self, args: list[Any]) -> Any:
        return self.state.request.http_version

    def pdk_request_get_method(self, args: list[Any]) -> Any:
        return self.state.request.method.upper()

    def pdk_request_get_path(self, args: list[Any]) -> Any:
        return normalize_path(self.state.raw_path)

    def pdk_request_get_raw_path(self, args: list[Any]) -> Any:
        return self.state.raw_path

    def pdk_request_get_path_with_query(self, args: list[Any]) -> Any:
        query = self.state.raw_query
        return self.state.raw_path + (f"?{query}" if query else "")

    def pdk_request_get_raw_query(self, args: list[Any]) -> Any:
        return self.state.raw_query

    def pdk_request_get_query_arg(self, args: list[Any]) -> Any:
        value = parse_query(self.state.raw_query).get(args[0])
        return value[0] if isinstance(value, list) else value

    def pdk_request_get_query(self, args: list[Any]) -> Any:
        limit = args[0] if args else 100
        items = list(parse_query(self.state.raw_query).items())[:limit]
        return dict(items)

    def pdk_request_get_header(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.request.get_header: header name must be a string")
        return first(self.state.headers, args[0])

    def pdk_request_get_headers(self, args: list[Any]) -> Any:
        limit = args[0] if args else 100
        return dict(list(lua_multimap(self.state.headers).items())[:limit])

    def pdk_request_get_raw_body(self, args: list[Any]) -> Any:
        return self.state.body

    def pdk_request_get_body(self, args: list[Any]) -> Any:
        mimetype = args[0] if args else None
        return parse_body(self.state.body, mimetype or first(self.state.headers,
                                                             "content-type"))

    def pdk_request_get_start_time(self, args: list[Any]) -> Any:
        return int(self.state.request.start_time * 1000)

    def pdk_request_get_uri_captures(self, args: list[Any]) -> Any:
        request = self.state.request
        unnamed = {0: self.state.raw_path} if request.uri_captures else {}
        unnamed.update({i: g for i, g in enumerate(request.uri_captures, start=1)})
        return {"unnamed": unnamed or [], "named": dict(request.named_captures) or []}

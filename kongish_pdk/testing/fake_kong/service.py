"""kong.service: where the request is proxied, what the upstream gets and what it answered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from kongish_pdk.testing.errors import KongLuaError, NotInKit
from kongish_pdk.testing.fake_kong.state import StateBacked
from kongish_pdk.testing.fake_kong.values import check_header, cjson, parse_body
from kongish_pdk.testing.http import encode_query, first, header_key, lua_multimap, parse_query

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE",
                      "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE"})


class ServiceMixin(StateBacked):
    """``kong.service``, ``kong.service.request`` and ``kong.service.response``."""

    # ----------------------------------------------------------------- kong.service

    def pdk_service_set_upstream(self, args: list[Any]) -> Any:
        self.state.proxy_settings["upstream"] = args[0]
        return True

    def pdk_service_set_target(self, args: list[Any]) -> Any:
        host, port = args[0], args[1]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise KongLuaError("kong.service.set_target: port must be an integer between 0 and "
                               "65535")
        self.state.proxy_settings["target"] = (host, port)
        self.state.service_request.host, self.state.service_request.port = host, port
        return None

    def pdk_service_set_retries(self, args: list[Any]) -> Any:
        self.state.proxy_settings["retries"] = args[0]
        return None

    def pdk_service_set_timeouts(self, args: list[Any]) -> Any:
        self.state.proxy_settings["timeouts"] = tuple(args[:3])
        return None

    def pdk_service_set_tls_verify(self, args: list[Any]) -> Any:
        self.state.proxy_settings["tls_verify"] = bool(args[0])
        return None

    def pdk_service_set_tls_verify_depth(self, args: list[Any]) -> Any:
        self.state.proxy_settings["tls_verify_depth"] = args[0]
        return None

    # ----------------------------------------------------------------- kong.service.request

    def pdk_service_request_set_scheme(self, args: list[Any]) -> Any:
        if args[0] not in ("http", "https"):
            raise KongLuaError(f"kong.service.request.set_scheme: invalid scheme: {args[0]}")
        self.state.service_request.scheme = args[0]
        return None

    def pdk_service_request_set_path(self, args: list[Any]) -> Any:
        path = args[0]
        if not isinstance(path, str) or not path.startswith("/"):
            raise KongLuaError("kong.service.request.set_path: path must start with /")
        self.state.service_request.path = path
        return None

    def pdk_service_request_set_raw_query(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.service.request.set_raw_query: query must be a string")
        self.state.service_request.raw_query = args[0]
        return None

    def pdk_service_request_set_method(self, args: list[Any]) -> Any:
        if args[0] not in _METHODS:
            raise KongLuaError(f"kong.service.request.set_method: invalid method: {args[0]}")
        self.state.service_request.method = args[0]
        return None

    def pdk_service_request_set_query(self, args: list[Any]) -> Any:
        if not isinstance(args[0], Mapping):
            raise KongLuaError("kong.service.request.set_query: args must be a table")
        self.state.service_request.raw_query = encode_query(args[0])
        return None

    def pdk_service_request_clear_query_arg(self, args: list[Any]) -> Any:
        raw = self.state.service_request.raw_query
        kept = [p for p in raw.split("&") if p and parse_query(p).keys() != {args[0]}]
        self.state.service_request.raw_query = "&".join(kept)
        return None

    def _set_upstream_header(self, name: str, values: list[str], add: bool = False) -> None:
        headers = self.state.service_request.headers
        key = header_key(name)
        if add:
            headers.setdefault(key, []).extend(values)
        else:
            headers[key] = list(values)
        if key == "host":
            self.state.service_request.host = values[0]

    def pdk_service_request_set_header(self, args: list[Any]) -> Any:
        values = check_header(args[0], args[1], "kong.service.request.set_header")
        self._set_upstream_header(args[0], values)
        return None

    def pdk_service_request_add_header(self, args: list[Any]) -> Any:
        values = check_header(args[0], args[1], "kong.service.request.add_header")
        self._set_upstream_header(args[0], values, add=True)
        return None

    def pdk_service_request_clear_header(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.service.request.clear_header: header must be a string")
        self.state.service_request.headers.pop(header_key(args[0]), None)
        return None

    def pdk_service_request_set_headers(self, args: list[Any]) -> Any:
        headers = args[0]
        if not isinstance(headers, Mapping):
            raise KongLuaError("kong.service.request.set_headers: headers must be a table")
        checked = {n: check_header(n, v, "kong.service.request.set_headers")
                   for n, v in headers.items()}
        for name in sorted(checked):
            self._set_upstream_header(name, checked[name])
        return None

    def _set_upstream_body(self, body: bytes) -> None:
        self.state.service_request.body = body
        self.state.service_request.headers["content-length"] = [str(len(body))]

    def pdk_service_request_set_raw_body(self, args: list[Any]) -> Any:
        body = args[0]
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        if not isinstance(body, bytes):
            raise KongLuaError("kong.service.request.set_raw_body: body must be a string")
        self._set_upstream_body(body)
        return None

    def pdk_service_request_set_body(self, args: list[Any]) -> Any:
        body, mimetype = args[0], args[1] if len(args) > 1 else None
        if not isinstance(body, Mapping):
            raise KongLuaError("kong.service.request.set_body: args must be a table")
        headers = self.state.service_request.headers
        kind = (mimetype or first(headers, "content-type") or "").split(";")[0].strip().lower()
        if kind == "application/json":
            encoded = cjson(body)
        elif kind == "application/x-www-form-urlencoded":
            encoded = urlencode(sorted(body.items()), doseq=True).encode()
        elif kind.startswith("multipart/"):
            raise NotInKit("the kit does not encode multipart bodies")
        else:
            return None  # Kong: nil, "unsupported content type"
        if mimetype:
            headers["content-type"] = [mimetype]
        self._set_upstream_body(encoded)
        return True

    def pdk_service_request_enable_buffering(self, args: list[Any]) -> Any:
        self.state.proxy_settings["buffering"] = True
        return None

    def pdk_service_request_enable_tls(self, args: list[Any]) -> Any:
        self.state.proxy_settings["tls"] = True
        return None

    def pdk_service_request_disable_tls(self, args: list[Any]) -> Any:
        self.state.proxy_settings["tls"] = False
        return None

    # ----------------------------------------------------------------- kong.service.response

    def pdk_service_response_get_status(self, args: list[Any]) -> Any:
        return self.state.upstream_status

    def pdk_service_response_get_header(self, args: list[Any]) -> Any:
        return first(self.state.upstream_headers, args[0])

    def pdk_service_response_get_headers(self, args: list[Any]) -> Any:
        if self.state.phase == "response":
            # Kong 3.10 packs the buffered headers' table (values behind a metatable) as an
            # empty map over MsgPack:1 (kong-protocol.md 6.22); the kit does the same, so a
            # plugin that relies on it fails here and not in production.
            return []
        limit = args[0] if args else 100
        return dict(list(lua_multimap(self.state.upstream_headers).items())[:limit])

    def pdk_service_response_get_raw_body(self, args: list[Any]) -> Any:
        return self.state.upstream_body if self.state.proxied else None

    def pdk_service_response_get_body(self, args: list[Any]) -> Any:
        if not self.state.proxied:
            return None
        mimetype = args[0] if args else None
        return parse_body(self.state.upstream_body,
                           mimetype or first(self.state.upstream_headers, "content-type"))

"""A fake Kong for one request: a PDK backend that answers from the kit's request state.

:class:`FakeKong` answers ``call(name, args)`` the way Kong 3.x answers an external plugin:
same phase checks (with Kong's wording), same value shapes *before* the bridge normalises
them (a header is a string, or a list when repeated; an empty table is ``[]`` on the wire),
same soft failures (``None``). In-process it sits behind ``surface.Kong(PDK(...))`` like the
real event channel; over the wire it answers the Steps a real server sends. One
implementation, so both modes see the same gateway.

Every function of the PDK table is either answered by a ``pdk_<name>`` method here or listed
in :data:`NOT_IN_KIT` (a test checks this); anything else raises :class:`NotInKit`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgpack

from kongish_pdk.errors import EventStopped
from kongish_pdk.pdk.table import BY_NAME, PHASES, PDKFunction
from kongish_pdk.testing.errors import (
    KitViolation,
    KongLuaError,
    LogPhaseError,
    NotInKit,
    PhaseError,
)
from kongish_pdk.testing.http import (
    ClientResponse,
    MultiMap,
    Request,
    ServiceRequest,
    Upstream,
    encode_query,
    first,
    header_key,
    header_value_text,
    lua_multimap,
    multimap,
    normalize_path,
    parse_query,
)

# Functions the kit deliberately does not imitate, and why.
NOT_IN_KIT: dict[str, str] = {
    "kong.service.set_tls_verify_store": "takes a Lua X509 store object, which no external "
                                         "plugin can build",
    "kong.service.set_tls_cert_key": "takes Lua certificate/key objects, which no external "
                                     "plugin can build",
    "kong.vault.update": "rewrites a Lua table in place; use kong.vault.get per reference",
}

NODE_ID = "5f1a2b3c-0000-4000-8000-00000000c001"
CLUSTER_ID = "5f1a2b3c-0000-4000-8000-00000000c002"

_ERROR_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 408: "Request timeout", 409: "Conflict",
    413: "Payload too large", 415: "Unsupported media type", 429: "Too many requests",
    500: "An unexpected error occurred", 501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE",
                      "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE"})

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class LogLine:
    """One ``kong.log.*`` call: the level and the message Kong would write."""

    level: str
    message: str
    phase: str


@dataclass(frozen=True)
class ExitInfo:
    """A ``kong.response.exit``/``error`` that ended the request (or the fail-closed 500)."""

    phase: str
    function: str  # "kong.response.exit" or "kong.response.error"
    status: int
    body: bytes
    headers: MultiMap


@dataclass(frozen=True)
class CallRecord:
    phase: str
    name: str
    args: list[Any]


def lua_text(value: Any) -> str:
    """Lua's tostring() of a log argument (the bridge already stringified anything else)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return header_value_text(value)


def cjson(value: Any) -> bytes:
    """cjson.encode as Kong uses it: compact, and '/' escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace(
        "/", "\\/").encode()


def wire_copy(value: Any) -> Any:
    """The value as it comes back after a trip through msgpack (tuples become lists).

    Raises TypeError for what the protocol cannot carry, exactly where the real server's
    encoder would raise inside the plugin's PDK call.
    """
    try:
        packed = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot be sent to Kong: {exc}") from None
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)


def _check_header(name: Any, value: Any, fn: str) -> list[str]:
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


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    if value is None:
        target.pop(parts[-1], None)
    else:
        target[parts[-1]] = value


def _parse_body(body: bytes, content_type: str | None) -> Any:
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


class GatewayState:
    """Everything Kong holds for one request, as the plugin's calls change it."""

    def __init__(self, request: Request, plugin_id: str) -> None:
        self.request = request
        self.plugin_id = plugin_id
        self.phase = "access"
        self.started = time.monotonic()
        self.headers = request.header_map()
        self.body = request.body_bytes()
        self.raw_path = request.raw_path()
        self.raw_query = request.raw_query()
        service = request.service or {}
        base = str(service.get("path") or "/")
        path = self.raw_path if base == "/" else base.rstrip("/") + self.raw_path
        upstream_headers = {k: list(v) for k, v in self.headers.items()}
        upstream_headers["host"] = [str(service.get("host") or request.host)]
        self.service_request = ServiceRequest(
            method=request.method.upper(), scheme=str(service.get("protocol") or "http"),
            host=str(service.get("host") or request.host), port=int(service.get("port") or 80),
            path=path, raw_query=self.raw_query, headers=upstream_headers, body=self.body)
        self.proxy_settings: dict[str, Any] = {}
        self.consumer = request.consumer
        self.credential = request.credential
        self.ctx_shared: dict[str, Any] = wire_copy(dict(request.ctx_shared))
        self.ngx_ctx: dict[str, Any] = {}
        self.serialize_values: dict[str, Any] = {}
        self.logs: list[LogLine] = []
        self.calls: list[CallRecord] = []
        self.violations: list[KitViolation] = []
        # The client response: headers a plugin sets before proxying are replayed over the
        # upstream's headers once it answers (kong.response.set_header in access works so).
        self.status = 200
        self.response_headers: MultiMap = {}
        self._header_ops: list[tuple[str, str, list[str]]] = []
        self.response_body = b""
        self.sent: ServiceRequest | None = None  # what the upstream received
        self.upstream_status: int | None = None
        self.upstream_headers: MultiMap = {}
        self.upstream_body = b""
        self.exit: ExitInfo | None = None
        self.snapshot: str | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def proxied(self) -> bool:
        return self.sent is not None

    @property
    def source(self) -> str:
        if self.exit is not None:
            return "exit"
        return "service" if self.proxied else "error"

    def proxy(self, upstream: Upstream) -> None:
        """Send the service request to the fake upstream; its answer becomes the response."""
        sent = ServiceRequest(**{k: getattr(self.service_request, k) for k in (
            "method", "scheme", "host", "port", "path", "raw_query", "body")},
            headers={k: list(v) for k, v in self.service_request.headers.items()})
        self.sent = sent
        answer = upstream(sent) if callable(upstream) else upstream
        self.upstream_status = answer.status
        self.upstream_headers = multimap(answer.headers)
        body = answer.body
        self.upstream_body = body.encode() if isinstance(body, str) else bytes(body)
        self.status = answer.status
        self.response_headers = {k: list(v) for k, v in self.upstream_headers.items()}
        for op, name, values in self._header_ops:
            self._apply_header(op, name, values)
        self.response_body = self.upstream_body

    def take_snapshot(self) -> None:
        """What Kong saves for the log timer (kong.log.serialize's JSON string)."""
        self.snapshot = json.dumps(self.serialize(), separators=(",", ":"))

    def client_response(self) -> ClientResponse:
        return ClientResponse(self.status, {k: list(v) for k, v in self.response_headers.items()},
                              self.response_body, self.source)

    # ----------------------------------------------------------------- response changes

    def _apply_header(self, op: str, name: str, values: list[str]) -> None:
        key = header_key(name)
        if op == "set":
            self.response_headers[key] = list(values)
        elif op == "add":
            self.response_headers.setdefault(key, []).extend(values)
        else:
            self.response_headers.pop(key, None)

    def change_header(self, op: str, name: str, values: list[str]) -> None:
        if not self.proxied:
            self._header_ops.append((op, name, values))
        self._apply_header(op, name, values)

    def finish(self, function: str, status: int, body: bytes, headers: MultiMap) -> None:
        """A terminal response: exit/error, or the server's fail-closed 500."""
        for name, values in headers.items():
            self.response_headers[name] = list(values)
        self.response_headers["content-length"] = [str(len(body))]
        self.status = status
        self.response_body = body
        self.exit = ExitInfo(self.phase, function, status, body, headers)

    # ----------------------------------------------------------------- log serializer

    def serialize(self) -> dict[str, Any]:
        request = self.request
        headers = lua_multimap(self.headers)
        for secret in ("authorization", "proxy-authorization"):
            if secret in headers:
                headers[secret] = "REDACTED"
        elapsed = int((time.monotonic() - self.started) * 1000)
        query = f"?{self.raw_query}" if self.raw_query else ""
        entry: dict[str, Any] = {
            "request": {
                "method": request.method.upper(),
                "uri": self.raw_path + query,
                "url": f"{request.scheme}://{request.host}:{request.port}{self.raw_path}{query}",
                "querystring": parse_query(self.raw_query),
                "headers": headers,
                "size": len(self.body),
            },
            "response": {
                "status": self.status,
                "headers": lua_multimap(self.response_headers),
                "size": len(self.response_body),
            },
            "latencies": {"request": elapsed, "kong": elapsed,
                          "proxy": 0 if self.proxied else -1},
            "client_ip": request.client_ip,
            "started_at": int(request.start_time * 1000),
            "tries": [],
            "source": "upstream" if self.exit is None and self.proxied else "kong",
        }
        if self.sent is not None:
            sent_query = f"?{self.sent.raw_query}" if self.sent.raw_query else ""
            entry["upstream_uri"] = self.sent.path + sent_query
            entry["upstream_status"] = str(self.upstream_status)
        for key, value in (("route", request.route), ("service", request.service),
                           ("consumer", self.consumer)):
            if value is not None:
                entry[key] = dict(value)
        if self.credential is not None:
            entry["authenticated_entity"] = {
                k: self.credential[k] for k in ("id", "consumer_id")
                if k in self.credential}
        if request.route is not None and "ws_id" in request.route:
            entry["workspace"] = request.route["ws_id"]
        for key, value in self.serialize_values.items():
            _set_dotted(entry, key, value)
        return entry


class FakeKong:
    """A PDK backend answering from a :class:`GatewayState` (see the module doc)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.stopped = False
        self.stop_reason = ""

    # ----------------------------------------------------------------- dispatch

    def call(self, name: str, args: list[Any]) -> Any:
        """Answer one PDK call, or raise what Kong (or the runtime) would make of it."""
        if self.stopped:
            raise EventStopped(f"{name}: {self.stop_reason}")
        state = self.state
        state.calls.append(CallRecord(state.phase, name, list(args)))
        try:
            fn = BY_NAME.get(name)
            if fn is None:
                raise NotInKit(f"{name} is not in the PDK table, so the kit cannot imitate it "
                               f"(kong.raw_call reaches it on a real Kong)")
            self._check_phase(fn)
            handler: Callable[[list[Any]], Any] | None = getattr(
                self, "pdk_" + name.removeprefix("kong.").replace(".", "_"), None)
            if handler is None:
                reason = NOT_IN_KIT.get(name, "not imitated")
                raise NotInKit(f"{name}: the testing kit does not imitate it ({reason})")
            value = handler(list(args))
        except KitViolation as exc:
            state.violations.append(exc)
            raise
        if fn.terminal:
            self.stop(f"the response was already sent by {name}")
        return value

    def stop(self, reason: str) -> None:
        self.stopped = True
        self.stop_reason = reason

    def _check_phase(self, fn: PDKFunction) -> None:
        phase = self.state.phase
        if phase not in fn.phases:
            allowed = fn.kong_phases or tuple(p for p in PHASES if p in fn.phases)
            raise PhaseError(f"{fn.name}: function cannot be called in {phase} phase "
                             f"(only in: {', '.join(allowed)})")
        if phase == "log" and fn.live_request:
            raise LogPhaseError(
                f"{fn.name}: not available in the log phase of an external plugin. Kong runs "
                f"it later, in a timer without the request, from a snapshot: use "
                f"kong.log.serialize(), kong.request.get_header(s), "
                f"kong.response.get_status/get_header(s)/get_source, or kong.ctx.shared "
                f"(save what you need there in an earlier phase)")

    # ----------------------------------------------------------------- kong.client

    def pdk_client_get_ip(self, args: list[Any]) -> Any:
        return self.state.request.client_ip

    pdk_client_get_forwarded_ip = pdk_client_get_ip

    def pdk_client_get_port(self, args: list[Any]) -> Any:
        return self.state.request.client_port

    pdk_client_get_forwarded_port = pdk_client_get_port

    def pdk_client_get_credential(self, args: list[Any]) -> Any:
        return self.state.credential

    def pdk_client_get_consumer(self, args: list[Any]) -> Any:
        return self.state.consumer

    def pdk_client_load_consumer(self, args: list[Any]) -> Any:
        wanted, by_username = args[0], len(args) > 1 and bool(args[1])
        for consumer in self.state.request.consumers:
            if consumer.get("id") == wanted or (by_username and consumer.get("username") ==
                                                wanted):
                return dict(consumer)
        return None

    def pdk_client_authenticate(self, args: list[Any]) -> Any:
        consumer = args[0] if args else None
        credential = args[1] if len(args) > 1 else None
        if consumer is None and credential is None:
            raise KongLuaError("kong.client.authenticate: either credential or consumer must "
                               "be provided")
        self.state.consumer, self.state.credential = consumer, credential
        return None

    def pdk_client_get_protocol(self, args: list[Any]) -> Any:
        route = self.state.request.route
        if route is None:
            return None
        protocols = route.get("protocols") or []
        if len(protocols) == 1:
            return protocols[0]
        return self.state.request.scheme

    def pdk_client_tls_request_client_certificate(self, args: list[Any]) -> Any:
        return True

    def pdk_client_tls_disable_session_reuse(self, args: list[Any]) -> Any:
        return True

    def pdk_client_tls_get_full_client_certificate_chain(self, args: list[Any]) -> Any:
        return self.state.request.client_certificate_chain

    def pdk_client_tls_set_client_verify(self, args: list[Any]) -> Any:
        self.state.proxy_settings["client_verify"] = args[0]
        return None

    # ----------------------------------------------------------------- misc namespaces

    def pdk_cluster_get_id(self, args: list[Any]) -> Any:
        return CLUSTER_ID

    def pdk_ctx_shared_get(self, args: list[Any]) -> Any:
        # A copy, as the wire would give: mutating it does not change kong.ctx.shared.
        return wire_copy(self.state.ctx_shared.get(args[0]))

    def pdk_ctx_shared_set(self, args: list[Any]) -> Any:
        value = wire_copy(args[1] if len(args) > 1 else None)
        if value is None:
            self.state.ctx_shared.pop(args[0], None)
        else:
            self.state.ctx_shared[args[0]] = value
        return None

    def pdk_ip_is_trusted(self, args: list[Any]) -> Any:
        return False  # Kong's default trusted_ips is empty

    def _log(self, level: str, args: list[Any]) -> None:
        message = "".join(lua_text(a) for a in args)
        self.state.logs.append(LogLine(level, message, self.state.phase))

    def pdk_log(self, args: list[Any]) -> Any:
        self._log("notice", args)

    def pdk_log_alert(self, args: list[Any]) -> Any:
        self._log("alert", args)

    def pdk_log_crit(self, args: list[Any]) -> Any:
        self._log("crit", args)

    def pdk_log_err(self, args: list[Any]) -> Any:
        self._log("err", args)

    def pdk_log_warn(self, args: list[Any]) -> Any:
        self._log("warn", args)

    def pdk_log_notice(self, args: list[Any]) -> Any:
        self._log("notice", args)

    def pdk_log_info(self, args: list[Any]) -> Any:
        self._log("info", args)

    def pdk_log_debug(self, args: list[Any]) -> Any:
        self._log("debug", args)

    def pdk_log_emerg(self, args: list[Any]) -> Any:
        self._log("emerg", args)

    def pdk_log_deprecation(self, args: list[Any]) -> Any:
        self._log("deprecation", args)

    def pdk_log_inspect(self, args: list[Any]) -> Any:
        self._log("inspect", args)

    def pdk_log_serialize(self, args: list[Any]) -> Any:
        if self.state.snapshot is None:
            self.state.take_snapshot()
        return self.state.snapshot

    def pdk_log_set_serialize_value(self, args: list[Any]) -> Any:
        if not isinstance(args[0], str):
            raise KongLuaError("kong.log.set_serialize_value: key must be a string")
        mode = (args[2] or {}).get("mode", "set") if len(args) > 2 else "set"
        key, value = args[0], args[1] if len(args) > 1 else None
        exists = key in self.state.serialize_values
        if (mode == "add" and exists) or (mode == "replace" and not exists):
            return None
        self.state.serialize_values[key] = value
        return None

    def pdk_nginx_get_subsystem(self, args: list[Any]) -> Any:
        return "http"

    def pdk_nginx_get_statistics(self, args: list[Any]) -> Any:
        return {"connections_active": 1, "connections_reading": 0, "connections_writing": 1,
                "connections_waiting": 0, "connections_accepted": 1, "connections_handled": 1,
                "total_requests": 1}

    def pdk_nginx_get_var(self, args: list[Any]) -> Any:
        state, request = self.state, self.state.request
        name = args[0]
        if name in request.nginx_vars:
            return request.nginx_vars[name]
        query = f"?{state.raw_query}" if state.raw_query else ""
        known: dict[str, Any] = {
            "request_uri": state.raw_path + query, "uri": state.raw_path,
            "args": state.raw_query or None, "host": request.host,
            "scheme": request.scheme, "server_port": str(request.port),
            "remote_addr": request.client_ip, "remote_port": str(request.client_port),
            "request_method": request.method.upper(),
        }
        if name in known:
            return known[name]
        if name.startswith("http_"):
            return first(state.headers, name[5:])
        return None

    def pdk_nginx_get_ctx(self, args: list[Any]) -> Any:
        return wire_copy(self.state.ngx_ctx.get(args[0]))

    def pdk_nginx_set_ctx(self, args: list[Any]) -> Any:
        self.state.ngx_ctx[args[0]] = wire_copy(args[1] if len(args) > 1 else None)
        return None

    def pdk_nginx_get_tls1_version_str(self, args: list[Any]) -> Any:
        return self.state.request.tls_version

    def pdk_nginx_req_start_time(self, args: list[Any]) -> Any:
        return self.state.request.start_time

    def pdk_node_get_id(self, args: list[Any]) -> Any:
        return NODE_ID

    def pdk_node_get_hostname(self, args: list[Any]) -> Any:
        return "kongish-kit"

    def pdk_node_get_memory_stats(self, args: list[Any]) -> Any:
        return {"lua_shared_dicts": {"kong": {"allocated_slabs": 0, "capacity": 5242880}},
                "workers_lua_vms": [{"http_allocated_gc": 0, "pid": 1}]}

    def pdk_plugin_get_id(self, args: list[Any]) -> Any:
        return self.state.plugin_id

    # ----------------------------------------------------------------- kong.request

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
        return _parse_body(self.state.body, mimetype or first(self.state.headers,
                                                             "content-type"))

    def pdk_request_get_start_time(self, args: list[Any]) -> Any:
        return int(self.state.request.start_time * 1000)

    def pdk_request_get_uri_captures(self, args: list[Any]) -> Any:
        request = self.state.request
        unnamed = {0: self.state.raw_path} if request.uri_captures else {}
        unnamed.update({i: g for i, g in enumerate(request.uri_captures, start=1)})
        return {"unnamed": unnamed or [], "named": dict(request.named_captures) or []}

    # ----------------------------------------------------------------- kong.response

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
        values = _check_header(args[0], args[1], "kong.response.set_header")
        if header_key(args[0]) != "transfer-encoding":  # Kong ignores it, with a warning
            self.state.change_header("set", args[0], values)
        return None

    def pdk_response_add_header(self, args: list[Any]) -> Any:
        values = _check_header(args[0], args[1], "kong.response.add_header")
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
        checked = {n: _check_header(n, v, "kong.response.set_headers") for n, v in
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
        out = {header_key(n): _check_header(n, v, "kong.response.exit")
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
        out = {header_key(n): _check_header(n, v, "kong.response.error")
               for n, v in (headers or {}).items()}
        out["content-type"] = [JSON_TYPE]
        self.state.finish("kong.response.error", status, cjson(body), out)
        return None

    # ----------------------------------------------------------------- kong.router

    def pdk_router_get_route(self, args: list[Any]) -> Any:
        return self.state.request.route

    def pdk_router_get_service(self, args: list[Any]) -> Any:
        return self.state.request.service

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
        values = _check_header(args[0], args[1], "kong.service.request.set_header")
        self._set_upstream_header(args[0], values)
        return None

    def pdk_service_request_add_header(self, args: list[Any]) -> Any:
        values = _check_header(args[0], args[1], "kong.service.request.add_header")
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
        checked = {n: _check_header(n, v, "kong.service.request.set_headers")
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
        return _parse_body(self.state.upstream_body,
                           mimetype or first(self.state.upstream_headers, "content-type"))

    # ----------------------------------------------------------------- telemetry, vault

    def pdk_telemetry_log(self, args: list[Any]) -> Any:
        self._log("telemetry", [json.dumps(args[2:4])])
        return None

    def pdk_vault_is_reference(self, args: list[Any]) -> Any:
        ref = args[0]
        return isinstance(ref, str) and ref.startswith("{vault://") and ref.endswith("}")

    def pdk_vault_get(self, args: list[Any]) -> Any:
        return self.state.request.vault.get(args[0])

    def pdk_vault_parse_reference(self, args: list[Any]) -> Any:
        ref = args[0]
        if not self.pdk_vault_is_reference([ref]):
            return None
        inner = ref[len("{vault://"):-1]
        name, _, rest = inner.partition("/")
        resource, _, query = rest.partition("?")
        resource, _, key = resource.partition("/")
        out: dict[str, Any] = {"name": name, "resource": resource}
        if key:
            out["key"] = key
        if query:
            out["config"] = dict(parse_qsl(query))
        return out

    def pdk_vault_flush(self, args: list[Any]) -> Any:
        return None

    def pdk_vault_warmup(self, args: list[Any]) -> Any:
        return args[0]


@dataclass
class PhaseRun:
    """How one phase ended, from the kit's point of view."""

    phase: str
    error: str | None = None  # "ValueError: boom" if the plugin raised
    traceback: str = ""
    cause: BaseException | None = field(default=None, repr=False)

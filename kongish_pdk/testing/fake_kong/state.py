"""What Kong holds for one request (:class:`GatewayState`) and the records the kit reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kongish_pdk.testing.errors import KitViolation
from kongish_pdk.testing.fake_kong.values import wire_copy
from kongish_pdk.testing.http import (
    ClientResponse,
    MultiMap,
    Request,
    ServiceRequest,
    Upstream,
    header_key,
    lua_multimap,
    multimap,
    parse_query,
)


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


@dataclass
class PhaseRun:
    """How one phase ended, from the kit's point of view."""

    phase: str
    error: str | None = None  # "ValueError: boom" if the plugin raised
    traceback: str = ""
    cause: BaseException | None = field(default=None, repr=False)


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


class StateBacked:
    """Base of FakeKong's namespace mixins: they answer from, and change, ``self.state``."""

    state: GatewayState

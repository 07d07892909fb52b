"""The testing kit's HTTP data: the fake client request, the fake upstream's answer, and what
the client and the upstream end up receiving.

Header names are compared the way Kong compares them: case-insensitively, with ``_`` matching
``-``. Every header or query multimap the kit hands back is ``dict[str, list[str]]`` with
lowercase names, like the typed PDK.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from kongish_pdk.pdk.types import Consumer, Credential, Route, Service
from kongish_pdk.testing.kong_worker import WS_ID

HeadersInput = Mapping[str, str | int | float | bool | Sequence[str]]
"""Headers as a test writes them: one value or a list of values per name."""

MultiMap = dict[str, list[str]]


def header_key(name: str) -> str:
    """The form the kit stores header names in: lowercase, ``_`` written as ``-``."""
    return name.lower().replace("_", "-")


def header_value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def multimap(headers: Mapping[str, Any] | None) -> MultiMap:
    """Normalise test input (``{"X-A": "1", "x_b": ["2", "3"]}``) into a multimap."""
    out: MultiMap = {}
    for name, value in (headers or {}).items():
        values = list(value) if isinstance(value, list | tuple) else [value]
        out.setdefault(header_key(name), []).extend(header_value_text(v) for v in values)
    return out


def first(headers: Mapping[str, list[str]], name: str) -> str | None:
    values = headers.get(header_key(name))
    return values[0] if values else None


def lua_multimap(headers: Mapping[str, list[str]]) -> dict[str, Any]:
    """What Kong sends for a multimap: a string for one value, an array for several."""
    return {k: v[0] if len(v) == 1 else list(v) for k, v in headers.items()}


# ---------------------------------------------------------------------- query strings

def parse_query(raw: str) -> dict[str, Any]:
    """``ngx.req.get_uri_args``: values are strings, lists when repeated, True for flags."""
    out: dict[str, Any] = {}
    for part in raw.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        name = unquote(key.replace("+", " "))
        item: str | bool = unquote(value.replace("+", " ")) if eq else True
        if name in out:
            previous = out[name]
            out[name] = [*previous, item] if isinstance(previous, list) else [previous, item]
        else:
            out[name] = item
    return out


def encode_query(args: Mapping[str, Any]) -> str:
    """``kong.service.request.set_query``: keys sorted, list order kept, True means a flag."""
    parts: list[str] = []
    for name in sorted(args):
        value = args[name]
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is True:
                parts.append(quote(name, safe=""))
            elif item is False or item is None:
                continue
            else:
                text = quote(header_value_text(item), safe="")
                parts.append(f"{quote(name, safe='')}={text}")
    return "&".join(parts)


# ---------------------------------------------------------------------- paths

# Percent-encoded unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~").
_UNRESERVED = re.compile(
    r"%(2[DdEe]|3[0-9]|4[1-9A-Fa-f]|5[0-9Aa]|5[Ff]|6[1-9A-Fa-f]|7[0-9Aa]|7[Ee])")


def normalize_path(raw: str) -> str:
    """``kong.request.get_path``: RFC 3986 section 6 normalisation, as Kong does it."""
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), raw)
    path = re.sub(r"%[0-9a-f]{2}", lambda m: m.group(0).upper(), path)
    path = re.sub(r"/{2,}", "/", path)
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


# ---------------------------------------------------------------------- entities

DEFAULT_SERVICE: Service = {
    "id": "5f1a2b3c-0000-4000-8000-00000000a001",
    "name": "test-service",
    "protocol": "http",
    "host": "upstream.test",
    "port": 80,
    "path": "/",
    "retries": 5,
    "connect_timeout": 60000,
    "write_timeout": 60000,
    "read_timeout": 60000,
    "enabled": True,
    "ws_id": WS_ID,
}

DEFAULT_ROUTE: Route = {
    "id": "5f1a2b3c-0000-4000-8000-00000000b001",
    "name": "test-route",
    "protocols": ["http", "https"],
    "paths": ["/"],
    "strip_path": False,
    "preserve_host": False,
    "service": {"id": DEFAULT_SERVICE["id"]},
    "ws_id": WS_ID,
}


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------- inputs

@dataclass
class Request:
    """The client's request, and what Kong knows about it (entities, consumer, ctx.shared).

    ``path`` may carry the query string (``"/users?page=2"``) unless ``query`` is given.
    Headers may repeat: ``{"accept": ["a/b", "c/d"]}``. A ``Host`` header defaults to
    ``host``.
    """

    method: str = "GET"
    path: str = "/"
    headers: HeadersInput = field(default_factory=dict)
    body: bytes | str = b""
    query: str | Mapping[str, Any] | None = None
    scheme: str = "http"
    host: str = "localhost"
    port: int = 8000
    client_ip: str = "127.0.0.1"
    client_port: int = 40000
    http_version: float = 1.1
    consumer: Consumer | None = None
    credential: Credential | None = None
    route: Route | None = field(default_factory=lambda: copy.deepcopy(DEFAULT_ROUTE))
    service: Service | None = field(default_factory=lambda: copy.deepcopy(DEFAULT_SERVICE))
    ctx_shared: Mapping[str, Any] = field(default_factory=dict)
    uri_captures: Sequence[str] = ()  # regex groups 1..n of the matched route path
    named_captures: Mapping[str, str] = field(default_factory=dict)
    nginx_vars: Mapping[str, str] = field(default_factory=dict)  # extra ngx.var values
    consumers: Sequence[Consumer] = ()  # what kong.client.load_consumer can find
    vault: Mapping[str, str] = field(default_factory=dict)  # "{vault://env/x}" -> secret
    tls_version: str | None = None
    client_certificate_chain: str | None = None
    start_time: float = field(default_factory=_now)  # seconds since the epoch

    def raw_path(self) -> str:
        return self.path.partition("?")[0] or "/"

    def raw_query(self) -> str:
        if self.query is None:
            return self.path.partition("?")[2]
        if isinstance(self.query, str):
            return self.query.removeprefix("?")
        return encode_query(self.query)

    def header_map(self) -> MultiMap:
        headers = multimap(self.headers)
        headers.setdefault("host", [self.host])
        return headers

    def body_bytes(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else bytes(self.body)


@dataclass
class UpstreamResponse:
    """What the fake upstream (the Kong service) answers."""

    status: int = 200
    headers: HeadersInput = field(default_factory=dict)
    body: bytes | str = b""

    @classmethod
    def json(cls, document: Any, status: int = 200,
             headers: HeadersInput | None = None) -> UpstreamResponse:
        all_headers: dict[str, Any] = {"content-type": "application/json"}
        all_headers.update(headers or {})
        return cls(status, all_headers, json.dumps(document).encode())


# ---------------------------------------------------------------------- outputs

@dataclass
class ServiceRequest:
    """The request the upstream received, after every ``kong.service.request.*`` call."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    raw_query: str
    headers: MultiMap
    body: bytes

    def header(self, name: str) -> str | None:
        return first(self.headers, name)

    @property
    def query(self) -> MultiMap:
        """Query arguments as name -> values (a flag is an empty list)."""
        out: MultiMap = {}
        for name, value in parse_query(self.raw_query).items():
            values = value if isinstance(value, list) else [value]
            out[name] = [v for v in values if v is not True]
        return out

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ClientResponse:
    """What the client received."""

    status: int
    headers: MultiMap
    body: bytes
    source: str  # "service", "exit" or "error", as kong.response.get_source says

    def header(self, name: str) -> str | None:
        return first(self.headers, name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


Upstream = UpstreamResponse | Callable[[ServiceRequest], UpstreamResponse]
"""A fixed upstream answer, or a function of the request the upstream received."""


def echo(request: ServiceRequest) -> UpstreamResponse:
    """An upstream that answers 200 with a JSON description of the request it received."""
    return UpstreamResponse.json({
        "method": request.method,
        "path": request.path,
        "query": request.raw_query,
        "headers": request.headers,
        "body": request.body.decode("utf-8", "replace"),
    })

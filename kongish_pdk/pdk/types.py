"""Python types of the values that really cross the wire for PDK calls.

These are the shapes Kong 3.x sends after its own post-processing (first return value only,
multimaps as lists, raw bodies as bytes), not the Lua signatures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

HeaderValue = str | int | float | bool | Sequence[str]
"""A header value Kong accepts: a string, number, boolean or a list of strings (never None)."""

HeadersIn = Mapping[str, HeaderValue]
"""Headers passed to ``set_headers``/``exit``/``error``."""

MultiMap = dict[str, list[str]]
"""Headers or query arguments as Kong sends them: every value is a list of strings."""

QueryArgsIn = Mapping[str, str | bool | int | float | Sequence[str]]
"""Arguments for ``kong.service.request.set_query`` (``True`` means a flag argument)."""

JSON = Any
"""Anything JSON can express (Kong encodes Lua tables as JSON objects or arrays)."""


class ServiceKey(TypedDict):
    id: str


class Route(TypedDict, total=False):
    """A Kong route entity as ``kong.router.get_route()`` returns it."""

    id: str
    created_at: int
    updated_at: int
    name: str
    protocols: list[str]
    methods: list[str]
    hosts: list[str]
    paths: list[str]
    headers: dict[str, list[str]]
    https_redirect_status_code: int
    regex_priority: int
    strip_path: bool
    preserve_host: bool
    request_buffering: bool
    response_buffering: bool
    snis: list[str]
    sources: list[dict[str, Any]]
    destinations: list[dict[str, Any]]
    tags: list[str]
    service: ServiceKey
    ws_id: str


class Service(TypedDict, total=False):
    """A Kong service entity as ``kong.router.get_service()`` returns it."""

    id: str
    created_at: int
    updated_at: int
    name: str
    retries: int
    protocol: str
    host: str
    port: int
    path: str
    connect_timeout: int
    write_timeout: int
    read_timeout: int
    tags: list[str]
    client_certificate: dict[str, str]
    tls_verify: bool
    tls_verify_depth: int
    enabled: bool
    ws_id: str


class Consumer(TypedDict, total=False):
    """A Kong consumer entity (``kong.client.get_consumer`` / ``load_consumer``)."""

    id: str
    created_at: int
    username: str
    custom_id: str
    tags: list[str]
    ws_id: str


class Credential(TypedDict, total=False):
    """The authenticated credential (``kong.client.get_credential``)."""

    id: str
    consumer_id: str
    consumer: dict[str, str]
    created_at: int
    key: str
    tags: list[str]
    ws_id: str


class UriCaptures(TypedDict):
    """Regex captures of the matched route path.

    ``unnamed[0]`` is the whole match, ``unnamed[1]`` the first group, as in Lua.
    """

    unnamed: list[str]
    named: dict[str, str]

"""Every example plugin of ``plugins/``, run for real: HTTP in, nginx + Lua mini-Kong, our
server over MsgPack:1, HTTP out. Each test runs in every concurrency mode; those marked
``@BOTH_PROTOCOLS`` run over ProtoBuf:1 too (every example plugin's PDK calls have an RPC in
Kong's ProtoBuf:1, so they behave the same)."""

from __future__ import annotations

import http.client
import json

import pytest

from .conftest import BOTH_PROTOCOLS, E2E
from .minikong import Plugin, wait_for_lines

pytestmark = pytest.mark.e2e

KEYS = {"secret-alice": "alice", "secret-bob": "bob"}


# ---------------------------------------------------------------------------- py-hello


@BOTH_PROTOCOLS
def test_hello_sets_a_response_header_from_the_host(e2e: E2E) -> None:
    gw = e2e.gateway({"/hello": [Plugin("py-hello", {"message": "e2e"})]})
    resp = gw.get("/hello/world", {"Host": "api.example.test"})
    assert resp.status == 200, resp
    assert resp.header("x-hello-from-python") == "Python says e2e to api.example.test"
    assert int(resp.header("x-python-pid") or "0") > 0
    echoed = resp.json()  # the upstream answered: access did not end the request
    assert echoed["path"] == "/hello/world"


@BOTH_PROTOCOLS
def test_hello_passes_header_bytes_that_are_not_utf8_through_unchanged(e2e: E2E) -> None:
    # Kong sends header values as raw bytes (a String or a KV over ProtoBuf:1, a str over
    # MsgPack:1); the plugin's answer must carry the same bytes back.
    gw = e2e.gateway({"/hello": [Plugin("py-hello", {"message": "e2e"})]})
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
    try:
        conn.putrequest("GET", "/hello", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", b"caf\xe9\xff")
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    # http.client reads header values as latin-1: encoding back gives the bytes on the wire
    assert resp.getheader("x-hello-from-python", "").encode("latin-1") == (
        b"Python says e2e to caf\xe9\xff")


def test_hello_uses_its_schema_default_when_the_config_is_empty(e2e: E2E) -> None:
    # mini-Kong applies the schema defaults from the dump, as Kong does before StartInstance
    gw = e2e.gateway({"/hello": [Plugin("py-hello", {})]})
    resp = gw.get("/hello", {"Host": "h"})
    assert resp.header("x-hello-from-python") == "Python says hello to h"


# ---------------------------------------------------------------------------- py-key-auth


@pytest.fixture
def auth(e2e: E2E):
    return e2e.gateway({
        "/auth": [Plugin("py-key-auth", {"keys": KEYS})],
        "/query-auth": [Plugin("py-key-auth", {"keys": KEYS, "key_in_query": True,
                                               "key_names": ["apikey", "x-api-key"]})],
    })


@BOTH_PROTOCOLS
def test_key_auth_without_a_key_is_401_with_a_challenge(auth) -> None:
    resp = auth.get("/auth/orders")
    assert resp.status == 401, resp
    assert resp.json() == {"message": "No API key found in request"}
    assert resp.header("www-authenticate") == 'Key realm="kong"'
    assert resp.header("content-type") == "application/json; charset=utf-8"
    assert resp.header("x-upstream") is None  # the upstream was never called


def test_key_auth_with_a_wrong_key_is_401(auth) -> None:
    resp = auth.get("/auth/orders", {"apikey": "guess"})
    assert resp.status == 401, resp
    assert resp.json() == {"message": "Invalid authentication credentials"}


def test_key_auth_with_a_good_key_names_the_consumer_upstream_and_hides_the_key(auth) -> None:
    resp = auth.get("/auth/orders", {"apikey": "secret-bob", "x-other": "kept"})
    assert resp.status == 200, resp
    seen = resp.json()["headers"]
    assert seen["x-consumer-username"] == "bob"
    assert "apikey" not in seen  # hide_credentials: cleared before proxying
    assert seen["x-other"] == "kept"


def test_key_auth_reads_the_key_from_the_query_when_allowed(auth) -> None:
    resp = auth.get("/query-auth/x?apikey=secret-alice")
    assert resp.status == 200, resp
    assert resp.json()["headers"]["x-consumer-username"] == "alice"
    second = auth.get("/query-auth/x", {"X-Api-Key": "secret-bob"})  # second key name
    assert second.json()["headers"]["x-consumer-username"] == "bob"
    assert auth.get("/auth/x?apikey=secret-alice").status == 401  # not allowed on /auth


@BOTH_PROTOCOLS
def test_plugins_run_by_priority_and_an_exit_stops_the_rest(e2e: E2E) -> None:
    # key-auth (1250) runs before request-transform (801) and hello (100): its 401 ends the
    # request before the others run, so neither the upstream nor their headers appear.
    gw = e2e.gateway({"/api": [
        Plugin("py-hello", {"message": "late"}),
        Plugin("py-request-transform", {"add_headers": {"x-added": "1"}}),
        Plugin("py-key-auth", {"keys": KEYS}),
    ]})
    denied = gw.get("/api/x")
    assert denied.status == 401
    assert denied.header("x-hello-from-python") is None
    allowed = gw.get("/api/x", {"apikey": "secret-alice"})
    assert allowed.status == 200
    assert allowed.header("x-hello-from-python") == "Python says late to " + (
        f"127.0.0.1:{gw.port}")
    seen = allowed.json()["headers"]
    assert seen["x-added"] == "1"
    assert seen["x-consumer-username"] == "alice"


# ---------------------------------------------------------------------------- py-request-transform


@BOTH_PROTOCOLS
def test_request_transform_changes_only_what_the_upstream_receives(e2e: E2E) -> None:
    gw = e2e.gateway({"/rt": [Plugin("py-request-transform", {
        "add_headers": {"x-team": "payments", "x-env": "e2e"},
        "remove_headers": ["x-internal", "cookie"],
        "add_query": {"version": "2", "page": "9"},
        "strip_prefix": "/rt/api/v1",
        "new_prefix": "/v1",
    })]})
    resp = gw.get("/rt/api/v1/users?page=1&tag=a&tag=b",
                  {"x-internal": "secret", "cookie": "c=1", "x-keep": "yes"})
    assert resp.status == 200, resp
    seen = resp.json()
    assert seen["path"] == "/v1/users"
    assert seen["headers"]["x-team"] == "payments"
    assert seen["headers"]["x-env"] == "e2e"
    assert seen["headers"]["x-keep"] == "yes"
    assert "x-internal" not in seen["headers"]
    assert "cookie" not in seen["headers"]
    # get_query (a multimap) then set_query: existing values kept, configured ones replaced
    assert seen["query"] == {"page": "9", "tag": ["a", "b"], "version": "2"}
    assert resp.header("x-team") is None  # the client's response is untouched


def test_request_transform_strips_a_prefix_down_to_the_root(e2e: E2E) -> None:
    gw = e2e.gateway({"/rt": [Plugin("py-request-transform",
                                     {"strip_prefix": "/rt/api", "new_prefix": ""})]})
    assert gw.get("/rt/api").json()["path"] == "/"
    assert gw.get("/rt/other").json()["path"] == "/rt/other"  # no prefix: path unchanged


# ---------------------------------------------------------------------------- py-response-rewrite


@BOTH_PROTOCOLS
def test_response_rewrite_adds_fields_to_json_bodies(e2e: E2E) -> None:
    gw = e2e.gateway({"/rr": [Plugin("py-response-rewrite",
                                     {"add_fields": {"rewritten": "yes", "by": "python"}})]})
    resp = gw.get("/rr/items?id=7", {"x-echo-status": "201"})
    assert resp.status == 201, resp
    assert resp.header("x-response-rewritten") == "201"  # service.response.get_status
    body = resp.json()
    assert body["rewritten"] == "yes" and body["by"] == "python"
    assert body["path"] == "/rr/items" and body["query"] == {"id": "7"}  # upstream's own fields
    assert int(resp.header("content-length") or -1) == len(resp.body)
    assert resp.header("x-upstream") == "echo"  # upstream headers are passed on


def test_response_rewrite_leaves_other_bodies_alone(e2e: E2E) -> None:
    gw = e2e.gateway({"/rr": [Plugin("py-response-rewrite",
                                     {"add_fields": {"x": "y"}, "header": "x-seen"})]})
    resp = gw.get("/rr/text")
    assert resp.status == 200
    assert resp.body == b"plain text from upstream"
    assert resp.header("x-seen") == "200"
    assert resp.header("content-type") == "text/plain"


def test_response_rewrite_sees_the_request_body_reach_the_upstream(e2e: E2E) -> None:
    gw = e2e.gateway({"/rr": [Plugin("py-response-rewrite", {"add_fields": {"ok": "1"}})]})
    resp = gw.request("POST", "/rr/echo", {"content-type": "text/plain"}, b"payload")
    assert resp.status == 200
    assert resp.json()["body"] == "payload"  # buffered proxying forwards the body
    assert resp.json()["method"] == "POST"
    assert resp.json()["ok"] == "1"


# ---------------------------------------------------------------------------- py-log


@BOTH_PROTOCOLS
def test_log_writes_one_line_per_request_after_the_response(e2e: E2E) -> None:
    sink = e2e.path("requests.jsonl")
    gw = e2e.gateway({
        "/logged": [Plugin("py-log", {"path": str(sink), "tag": "e2e"})],
        "/guarded": [Plugin("py-log", {"path": str(sink), "tag": "guarded"}),
                     Plugin("py-key-auth", {"keys": KEYS})],
    })
    assert gw.get("/logged/a?x=1").status == 200
    assert gw.request("POST", "/logged/b", body=b"{}").status == 200
    assert gw.get("/guarded/c").status == 401  # log runs for exits too
    lines = sorted(wait_for_lines(sink, 3), key=lambda e: e["uri"])
    assert [(e["tag"], e["method"], e["uri"], e["status"]) for e in lines] == [
        ("guarded", "GET", "/guarded/c", 401),
        ("e2e", "GET", "/logged/a?x=1", 200),
        ("e2e", "POST", "/logged/b", 200),
    ]
    for entry in lines:
        assert entry["client_ip"] == "127.0.0.1"
        assert isinstance(entry["latency_ms"], int) and entry["latency_ms"] >= 0


@BOTH_PROTOCOLS
def test_log_without_a_path_writes_to_kongs_error_log(e2e: E2E) -> None:
    gw = e2e.gateway({"/logged": [Plugin("py-log", {"tag": "to-nginx"})]})
    assert gw.get("/logged/z").status == 200
    (line,) = gw.wait_for_log(r"\[notice\].*\[kong\] \[py-log\] ")
    entry = json.loads(line.split("[kong] [py-log] ", 1)[1].split(", context:")[0])
    assert entry["tag"] == "to-nginx"
    assert entry["uri"] == "/logged/z"
    assert entry["status"] == 200


def test_a_typed_config_plugin_scoped_to_a_route_starts(e2e: E2E) -> None:
    # Kong adds route_id (service_id, consumer_id, plugin_instance_name) to the Config JSON
    # of a scoped plugin. A typed Config must not refuse them as unknown fields, or every
    # route-scoped typed plugin fails StartInstance (500) on a real Kong.
    gw = e2e.gateway({"/rt": [Plugin("py-request-transform", {"add_headers": {"x-a": "1"}})]})
    resp = gw.get("/rt/x")
    assert resp.status == 200, f"{resp!r}\n{gw.error_log()[-1500:]}"
    assert resp.json()["headers"]["x-a"] == "1"

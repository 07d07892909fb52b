"""PDK behaviour beyond the example plugins, and what the client sees when a plugin fails.

Tests marked ``@BOTH_PROTOCOLS`` run over ProtoBuf:1 too; the PDK functions ProtoBuf:1 has no
RPC for (``kong.plugin.get_id``, names Kong does not have) are checked to fail closed with
the server's error naming them."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from .conftest import BOTH_PROTOCOLS, E2E
from .minikong import Plugin, wait_for_lines

pytestmark = pytest.mark.e2e

RAISED = r"e2e-raise: boom in"
NODE_ID = "3e2b7c4a-6f1d-4d2e-9a0b-1c2d3e4f5a6b"  # what lua/minikong/pdk.lua answers


# ---------------------------------------------------------------------------- the probe


@pytest.fixture
def probe(e2e: E2E):
    """e2e-probe as a global plugin (so its rewrite phase runs) plus a plain route."""
    sink = e2e.path("probe.jsonl")
    gw = e2e.gateway({"/p": []}, [Plugin("e2e-probe", {"path": str(sink)})])
    gw.sink = sink
    return gw


def test_rewrite_runs_for_global_plugins_and_reaches_the_upstream(probe) -> None:
    resp = probe.get("/p/a")
    assert resp.status == 200, resp
    assert resp.json()["headers"]["x-probe-rewrite"] == "yes"


@BOTH_PROTOCOLS
def test_multimaps_and_add_header(probe) -> None:
    resp = probe.request("GET", "/p/a?tag=x&tag=y&flag",
                         header_list=[("X-Multi", "one"), ("X-Multi", "two")])
    assert resp.header_values("x-probe-multi") == ["a", "b"]
    assert resp.header("x-probe-seen-multi") == "one,two"  # get_headers, StepMultiMap
    # get_query: repeated values as a list, a bare flag as an empty list
    assert json.loads(resp.header("x-probe-query") or "") == {"flag": [], "tag": ["x", "y"]}


@BOTH_PROTOCOLS
def test_raw_bodies_travel_as_bytes_both_ways(probe) -> None:
    # not UTF-8 (Kong sends raw bodies as msgpack bin, or protobuf bytes), and larger than one
    # socket read (a ProtoBuf:1 frame arrives in pieces)
    body = bytes(range(256)) * 300
    resp = probe.request("POST", "/p/body", {"x-probe": "body"}, body)
    assert resp.status == 200, resp
    assert resp.header("x-probe-body-type") == "bytes"
    assert resp.header("x-probe-body-len") == str(len(body))
    # set_raw_body(body.upper()) is what the upstream received
    assert resp.json()["body_md5"] == hashlib.md5(body.upper()).hexdigest()


@BOTH_PROTOCOLS
def test_exit_with_a_bytes_body_ends_the_handler(probe) -> None:
    resp = probe.get("/p/x", {"x-probe": "exit"})
    assert resp.status == 418
    assert resp.body == b"\xffbinary\x00body"
    assert resp.header("x-probe-exit") == "yes"
    assert resp.header("x-probe-after-exit") is None
    assert resp.header("x-upstream") is None


@BOTH_PROTOCOLS
def test_error_gives_kongs_default_message(probe) -> None:
    resp = probe.get("/p/x", {"x-probe": "error"})
    assert resp.status == 403
    assert resp.json() == {"message": "Forbidden"}


@BOTH_PROTOCOLS
def test_router_entities_come_back_through_step_route(probe) -> None:
    resp = probe.get("/p/x", {"x-probe": "route"})
    assert resp.header("x-probe-route") == "p"


@BOTH_PROTOCOLS
def test_every_kind_of_pdk_answer_reaches_the_plugin(probe) -> None:
    # Number, Bool (false: written explicitly over ProtoBuf:1), Int, a nil Value, String, an
    # entity; and log varargs of mixed types (a ListValue over ProtoBuf:1)
    resp = probe.get("/p/x", {"x-probe": "types"})
    assert resp.status == 200, resp
    seen = json.loads(resp.header("x-probe-types") or "")
    assert seen.pop("http_version") == 1.1
    assert seen.pop("trusted") is False
    assert isinstance(seen["client_port"], int) and seen.pop("client_port") > 0
    started = seen.pop("started")
    assert isinstance(started, float) and started > 1.7e9
    route = probe.config
    assert seen == {
        "missing": None, "method": "GET", "subsystem": "http", "node_id": NODE_ID,
        "service": {"id": route.service_id, "name": "echo", "host": "service", "port": 80,
                    "protocol": "http", "path": "/"},
    }
    probe.wait_for_log(r"\[warn\].*\[kong\] \[e2e-probe\] probe types:12\.5true")


def test_unknown_pdk_names_are_logged_and_answered_nil(probe) -> None:
    probe.allow_errors(r"could not find pdk method: kong\.nope\.missing_function")
    resp = probe.get("/p/x", {"x-probe": "unknown"})
    assert resp.status == 200
    assert resp.header("x-probe-unknown") == "None"
    probe.wait_for_log(r"\[error\].*could not find pdk method: kong\.nope\.missing_function")


def test_plugin_id_and_kong_metadata_reach_the_instance(e2e: E2E, probe) -> None:
    resp = probe.get("/p/x", {"x-probe": "plugin_id"})
    plugin = probe.config.plugins[0]
    assert resp.header("x-probe-plugin-id") == plugin.id
    meta = json.loads(resp.header("x-probe-meta") or "")
    assert meta["plugin_id"] == plugin.id
    assert meta["ws_id"] == probe.config.workspace_id
    assert meta["key"].startswith("plugins:e2e-probe:")
    assert isinstance(meta["seq"], int)


@BOTH_PROTOCOLS
def test_log_phase_sees_the_snapshot_and_the_same_ctx_shared(probe) -> None:
    resp = probe.get("/p/logged?q=1", {"x-probe-id": "req-1", "Authorization": "Basic secret"})
    assert resp.status == 200
    (entry,) = wait_for_lines(probe.sink, 1)
    # kong.ctx.shared is the table of the request: values from rewrite and access are there
    assert entry["shared"] == {"rewrite": "ran", "access": "GET /p/logged"}
    # response getters answer from the snapshot taken when the response was sent
    assert entry["status"] == 200
    assert entry["response_header"] == "a"
    assert entry["response_headers"]["x-probe-multi"] == ["a", "b"]
    assert entry["response_headers"]["x-upstream"] == ["echo"]
    # request getters too (the log handler runs in a timer, without the request)
    assert entry["request_header"] == "req-1"
    assert entry["request_headers"]["x-probe-id"] == ["req-1"]
    serialized = entry["serialize"]
    assert serialized["request"]["method"] == "GET"
    assert serialized["request"]["uri"] == "/p/logged?q=1"
    assert serialized["request"]["querystring"] == {"q": "1"}
    assert serialized["request"]["headers"]["authorization"] == "REDACTED"
    assert serialized["response"]["status"] == 200
    assert serialized["response"]["headers"]["x-upstream"] == "echo"
    assert serialized["client_ip"] == "127.0.0.1"
    assert serialized["upstream_uri"] == "/p/logged?q=1"
    assert serialized["route"]["name"] == "p"
    assert isinstance(serialized["started_at"], int) and serialized["started_at"] > 0
    assert set(serialized["latencies"]) >= {"request", "kong", "proxy"}


def test_log_phase_after_an_exit_sees_the_exit_status(probe) -> None:
    assert probe.get("/p/x", {"x-probe": "exit"}).status == 418
    (entry,) = wait_for_lines(probe.sink, 1)
    assert entry["status"] == 418
    assert entry["serialize"]["response"]["status"] == 418
    assert entry["shared"]["access"] == "GET /p/x"


# ---------------------------------------------------------------------------- failures


@BOTH_PROTOCOLS
@pytest.mark.parametrize("phase", ["rewrite", "access", "response"])
def test_a_raising_plugin_gives_500_under_fail_closed(e2e: E2E, phase: str) -> None:
    e2e.allow_server_errors(RAISED)
    # rewrite runs only for global plugins; the others are scoped to the route
    raising = Plugin("e2e-raise", {"raise_in": phase})
    if phase == "rewrite":
        gw = e2e.gateway({"/r": [Plugin("py-hello")]}, [raising])
    else:
        gw = e2e.gateway({"/r": [raising, Plugin("py-hello")]})
    resp = gw.get("/r/x")
    assert resp.status == 500, resp
    assert resp.json() == {"message": "An unexpected error occurred"}
    if phase == "response":
        # access handlers ran before the response phase (and the upstream answered)
        assert resp.header("x-hello-from-python") is not None
        assert resp.header("x-upstream") == "echo"
    else:
        assert resp.header("x-hello-from-python") is None  # lower priority: never ran
        assert resp.header("x-upstream") is None
    assert e2e.server is not None
    e2e.server.wait_for(rf"{RAISED} {phase}")
    # the gateway keeps serving, and the plugin keeps failing the same way
    assert gw.get("/r/y").status == 500


@BOTH_PROTOCOLS
def test_a_raising_plugin_lets_the_request_through_with_on_plugin_error_pass(e2e: E2E) -> None:
    e2e.allow_server_errors(RAISED)
    gw = e2e.gateway({"/r": [Plugin("e2e-raise", {"raise_in": "access"}), Plugin("py-hello")]},
                     server_flags=["--on-plugin-error", "pass"])
    resp = gw.get("/r/x")
    assert resp.status == 200, resp
    assert resp.header("x-hello-from-python") is not None  # later plugins still ran
    assert resp.header("x-e2e-raise-response") == "survived"  # and its response phase
    assert resp.json()["path"] == "/r/x"


@BOTH_PROTOCOLS
def test_a_pdk_call_kong_refuses_fails_the_request_like_kong(e2e: E2E) -> None:
    # kong.service.response.get_raw_body is not allowed in access: Kong raises a Lua error,
    # never answers the call (over MsgPack:1 the server reaps the event later; over
    # ProtoBuf:1 the event's connection closes), and the client gets Kong's 500.
    gw = e2e.gateway({"/bad": [Plugin("e2e-probe", {"path": str(e2e.path("x"))})]})
    gw.allow_errors(r"\[minikong\] e2e-probe access failed: "
                    r"kong\.service\.response\.get_raw_body: "
                    r"function cannot be called in access phase")
    resp = gw.get("/bad/x", {"x-probe": "refused"})
    assert resp.status == 500, resp
    assert resp.json() == {"message": "An unexpected error occurred"}
    assert resp.header("x-probe-after-refused") is None
    gw.wait_for_log(r"\[error\].*function cannot be called in access phase")
    assert gw.get("/bad/y").status == 200  # the next request is served normally


@pytest.mark.parametrize("protocol", ["protobuf"])
@pytest.mark.parametrize(("probe_name", "function"), [
    ("plugin_id", "kong.plugin.get_id"),
    ("unknown", "kong.nope.missing_function"),
])
def test_a_function_protobuf_cannot_carry_fails_closed_naming_it(
        e2e: E2E, probe_name: str, function: str) -> None:
    # ProtoBuf:1 has no RPC for these: the server refuses the call inside the plugin, the
    # plugin fails, and the server answers Kong's 500 (fail-closed) with a log line that
    # names the function and the way out (MsgPack:1).
    named = (rf"{re.escape(function)}\(\) cannot be called over ProtoBuf:1: .*"
             r"start the server with --protocol msgpack")
    refused = (rf"plugin 'e2e-probe' phase 'access' .* failed \(answering 500\): "
               rf"NotCarried: {named}")
    e2e.allow_server_errors(refused)
    gw = e2e.gateway({"/p": [Plugin("e2e-probe", {"path": str(e2e.path("x"))})]})
    resp = gw.get("/p/x", {"x-probe": probe_name})
    assert resp.status == 500, resp
    assert resp.json() == {"message": "An unexpected error occurred"}
    assert resp.header("content-type") == "application/json; charset=utf-8"
    assert e2e.server is not None
    e2e.server.wait_for(refused)
    ok = gw.get("/p/y")  # the same plugin, without that call, is served normally
    assert ok.status == 200, ok
    assert ok.json()["path"] == "/p/y"

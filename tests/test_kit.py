"""The testing kit: Kong's semantics in the fake PDK, identical in-process and over the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from kongish_pdk.pdk.table import FUNCTIONS
from kongish_pdk.testing import (
    ConfigRejected,
    Kit,
    KongLuaError,
    LogPhaseError,
    NotInKit,
    PhaseError,
    PluginError,
    Request,
    UpstreamResponse,
)
from kongish_pdk.testing.fake_kong import NOT_IN_KIT, FakeKong

from conftest import TEST_PLUGINS

PLUGINS = Path(__file__).parent / "kit_plugins"
BOTH = pytest.mark.parametrize("kong_mode", ["local", "wire"])


@BOTH
def test_request_is_seen_as_kong_shows_it(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "probe.py")
    request = Request(
        "POST", "/a//b/./c?x=1&x=2&flag",
        headers={"X-Custom-Header": "v1", "accept": ["a/b", "c/d"], "x-remove-me": "1"},
        body=b"\x00\xffraw", consumer={"id": "c1", "username": "alice"},
        ctx_shared={"from_earlier_plugin": "hello"},
    )
    result = plugin.run(request, upstream=UpstreamResponse(
        200, {"x-upstream": "u", "content-type": "text/plain"}, b"upstream body"))
    seen = result.ctx_shared["seen"]
    assert seen["header"] == "v1"  # case-insensitive, "_" matches "-"
    assert seen["headers"]["accept"] == ["a/b", "c/d"]  # multimaps are lists
    assert seen["headers"]["x-custom-header"] == ["v1"]
    assert seen["query"] == {"x": ["1", "2"], "flag": []}
    assert seen["flag"] is True
    assert seen["body"] == b"\x00\xffraw" and seen["body_type"] == "bytes"
    assert seen["path"] == "/a/b/c"
    assert seen["method"] == "POST"
    assert seen["consumer"] == {"id": "c1", "username": "alice"}
    assert seen["route_name"] == "test-route"
    assert seen["ip"] == "127.0.0.1"
    assert seen["before"] == "hello"

    sent = result.service_request
    assert sent is not None
    assert sent.path == "/rewritten"
    assert sent.raw_query == "a=1&a=x%20y&b=2&f"
    assert sent.header("x-added") == "1"
    assert sent.headers["x-multi"] == ["a", "b"]
    assert "x-remove-me" not in sent.headers
    assert sent.header("host") == "upstream.test"
    assert sent.body == b"\x00\xffraw"

    assert result.ctx_shared["response_seen"] == {
        "status": 200, "upstream_status": 200, "upstream_header": "u",
        "client_header": "yes", "source": "service"}
    assert result.response.status == 201
    assert result.response.header("x-from-access") == "yes"
    assert result.response.header("X_Upstream") == "u"
    assert result.response.body == b"upstream body"
    assert result.phases == ["access", "response", "log"]
    assert result.log_messages("info") == ["access 1 true"]
    assert result.log_messages("notice") == ["log status=201"]
    assert result.ctx_shared["serialized_type"] == "str"  # a JSON string, as Kong sends it
    assert result.serialized is not None and result.serialized["response"]["status"] == 201


@BOTH
def test_exit_stops_the_handler_and_later_phases(plugin_kit: Kit, kong_mode: str) -> None:
    plugin = plugin_kit.load(PLUGINS / "exiter.py")
    result = plugin.run(Request())
    assert result.response.status == 403
    assert result.response.json() == {"message": "go away"}
    assert result.response.header("content-type") == "application/json; charset=utf-8"
    assert result.response.header("x-reason") == "test"
    assert result.exit is not None and result.exit.phase == "access"
    assert result.service_request is None  # never proxied
    assert result.phases == ["access", "log"]  # no response phase, log still runs
    assert "never logged" not in result.log_messages()
    assert result.log_messages("notice") == ["source=exit status=403"]
    if kong_mode == "local":
        assert plugin.plugin.after_exit == 1  # Python after exit ran, up to the next PDK call


@BOTH
def test_wrong_phase_raises_kongs_error(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "misuse.py", {"case": "wrong_phase"})
    with pytest.raises(PhaseError, match=r"kong.response.get_status: function cannot be called "
                       r"in access phase \(only in: response, header_filter, body_filter, log, "
                       r"error, admin_api\)"):
        plugin.run()


def test_a_swallowed_phase_error_still_fails_the_test() -> None:
    with Kit() as kit:
        plugin = kit.load(PLUGINS / "misuse.py", {"case": "swallowed_wrong_phase"})
        with pytest.raises(PhaseError):
            plugin.run()


@BOTH
def test_live_request_functions_fail_in_the_log_timer(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "misuse.py", {"case": "log_live"})
    with pytest.raises(LogPhaseError, match=r"kong\.request\.get_method: not available in the log"):
        plugin.run()


@BOTH
def test_plugin_failure_is_reported_and_fails_closed(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "misuse.py", {"case": "raises"})
    with pytest.raises(PluginError, match="access phase: ValueError: boom") as caught:
        plugin.run()
    assert "misuse.py" in caught.value.traceback
    result = plugin.run(raise_errors=False)
    assert result.response.status == 500
    assert result.response.json() == {"message": "An unexpected error occurred"}
    assert [e.phase for e in result.errors] == ["access"]
    assert result.phases == ["access", "log"]


@BOTH
def test_a_pdk_call_from_another_thread_fails_at_once(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(TEST_PLUGINS / "subthread.py")
    with pytest.raises(PluginError, match=r"PDKThreadError: kong\.request\.get_header\(\) was "
                                          r"called from a thread other than"):
        plugin.run()


@BOTH
def test_log_phase_failure_is_seen_too(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "misuse.py", {"case": "log_raises"})
    with pytest.raises(PluginError, match="log phase: RuntimeError: log boom"):
        plugin.run()


@BOTH
def test_bad_header_value_is_a_lua_error(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "misuse.py", {"case": "bad_header"})
    with pytest.raises(KongLuaError, match='invalid header value for "x-bad"'):
        plugin.run()


def test_unknown_functions_fail_loudly() -> None:
    with Kit() as kit:
        plugin = kit.load(PLUGINS / "misuse.py", {"case": "raw_unknown"})
        with pytest.raises(NotInKit, match=r"kong\.not\.a\.function is not in the PDK table"):
            plugin.run()


@BOTH
def test_config_kong_would_refuse_is_refused(plugin_kit: Kit) -> None:
    with pytest.raises(ConfigRejected, match=r"config\.case: required field missing"):
        plugin_kit.load(PLUGINS / "misuse.py", {})
    with pytest.raises(ConfigRejected, match=r"config\.nope: unknown field"):
        plugin_kit.load(PLUGINS / "misuse.py", {"case": "x", "nope": 1})


@BOTH
def test_single_phase_with_a_fake_upstream(plugin_kit: Kit) -> None:
    plugin = plugin_kit.load(PLUGINS / "probe.py")
    result = plugin.run_phase("response", upstream=UpstreamResponse(502, {"x-upstream": "z"}))
    assert result.phases == ["response"]
    assert result.ctx_shared["response_seen"]["upstream_status"] == 502
    assert result.ctx_shared["response_seen"]["upstream_header"] == "z"
    assert result.response.status == 201


def test_every_table_function_is_imitated_or_refused_by_name() -> None:
    for fn in FUNCTIONS:
        if not fn.phases:
            continue  # no external plugin phase may call it: the phase check always refuses
        method = "pdk_" + fn.name.removeprefix("kong.").replace(".", "_")
        assert hasattr(FakeKong, method) != (fn.name in NOT_IN_KIT), fn.name


@pytest.mark.parametrize("mode", ["local", "wire"])
def test_lua_style_plugins_get_tuples(mode: str) -> None:
    with Kit(mode, lua_style=True) as kit:  # type: ignore[arg-type]
        plugin = kit.load(PLUGINS / "lua_style.py")
        result = plugin.run(Request(host="lua.test", headers={"accept": ["a", "b"]}))
    sent = result.service_request
    assert sent is not None
    assert sent.header("x-host") == "lua.test"
    assert sent.header("x-accept-count") == "2"


@BOTH
def test_preread_failure_fails_closed_like_the_server(plugin_kit: Kit) -> None:
    # The server ends a failed preread with kong.response.exit(500) (not error): the kit
    # records the same call in both modes.
    plugin = plugin_kit.load(PLUGINS / "preread_raises.py")
    result = plugin.run_phase("preread", raise_errors=False)
    assert [e.phase for e in result.errors] == ["preread"]
    assert result.response.status == 500
    assert [(c.name, c.args) for c in result.calls] == [("kong.response.exit", [500])]


@BOTH
def test_non_utf8_strings_cross_the_kit_as_they_cross_the_server(plugin_kit: Kit) -> None:
    result = plugin_kit.load(PLUGINS / "not_utf8.py").run()
    assert result.ctx_shared["raw"] == result.ctx_shared["back"] == "caf\udce9"

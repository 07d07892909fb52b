"""The PDK bridge without a gateway: what reaches the backend, and what the plugin gets back."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kongish_pdk import PDKError
from kongish_pdk.errors import PDKThreadError
from kongish_pdk.pdk.bridge import PDK
from kongish_pdk.pdk.surface import Kong
from kongish_pdk.plugin.spec import build_spec
from kongish_pdk.runtime.instances import Instance, InstanceMeta, InstanceTable


class Recorder:
    """A backend that records calls and answers from a table."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.answers = answers or {}

    def call(self, name: str, args: list[Any]) -> Any:
        self.calls.append((name, args))
        answer = self.answers.get(name)
        if isinstance(answer, Exception):
            raise answer
        return answer


def kong(answers: dict[str, Any] | None = None, lua_style: bool = False) -> tuple[Kong, Recorder]:
    backend = Recorder(answers)
    return Kong(PDK(backend, lua_style)), backend


def test_printing_a_namespace_calls_nothing() -> None:
    k, backend = kong()
    assert str(k.request) == "<PDK namespace kong.request>"
    assert repr(k.service.request) == "<PDK namespace kong.service.request>"
    assert f"{k}" == "<PDK namespace kong>"
    assert backend.calls == []


def test_a_typo_fails_at_once_with_a_suggestion() -> None:
    k, backend = kong()
    with pytest.raises(AttributeError, match=r"did you mean kong\.request\?"):
        k.requst.get_header("host")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"did you mean kong\.request\.get_header\?"):
        k.request.get_headr("host")  # type: ignore[attr-defined]
    assert backend.calls == []


def test_arguments_kong_would_choke_on_are_refused_before_sending() -> None:
    k, backend = kong()
    with pytest.raises(TypeError, match=r"set_header\(\): argument 'value' must not be None"):
        k.response.set_header("x", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'message' is None but a later argument is given"):
        k.response.error(401, None, {"www-authenticate": "Basic"})
    assert backend.calls == []


def test_nil_holes_and_trailing_nones() -> None:
    k, backend = kong()
    k.response.exit(403, None, {"x": "y"})  # Lua would drop the headers after a nil body
    k.response.exit(204)
    k.request.get_headers()
    assert backend.calls == [
        ("kong.response.exit", [403, "", {"x": "y"}]),
        ("kong.response.exit", [204]),
        ("kong.request.get_headers", []),
    ]


def test_log_arguments_become_text_kong_can_print() -> None:
    k, backend = kong()
    k.log.err("count", 3, 1.5, None, {"a": 1}, b"raw")
    k.log("plain")
    assert backend.calls == [("kong.log.err", ["count", 3, 1.5, "None", "{'a': 1}", b"raw"]),
                             ("kong.log", ["plain"])]


def test_results_arrive_as_python_shapes() -> None:
    k, _ = kong({
        "kong.request.get_headers": {"accept": "*/*", "x-multi": ["a", "b"]},
        "kong.request.get_query": [],  # lua-MessagePack's empty table
        "kong.request.get_raw_body": "caf\udce9",  # a str body, as Kong 2.x sent it
        "kong.router.get_route": [],
        "kong.response.set_header": "ignored",
        "kong.request.get_uri_captures": {"unnamed": {0: "/v1/x", 1: "x"}, "named": []},
    })
    assert k.request.get_headers() == {"accept": ["*/*"], "x-multi": ["a", "b"]}
    assert k.request.get_query() == {}
    assert k.request.get_raw_body() == b"caf\xe9"
    assert k.router.get_route() == {}
    assert k.response.set_header("x", "y") is None
    assert k.request.get_uri_captures() == {"unnamed": ["/v1/x", "x"], "named": {}}


def test_gateway_errors_raise_or_come_back_lua_style() -> None:
    failing = {"kong.client.load_consumer": PDKError("kong.client.load_consumer: not a uuid")}
    k, _ = kong(failing)
    with pytest.raises(PDKError, match="not a uuid"):
        k.client.load_consumer("nope")
    lua, _ = kong({**failing, "kong.request.get_header": "h"}, lua_style=True)
    assert lua.client.load_consumer("nope") == (None, "kong.client.load_consumer: not a uuid")
    assert lua.request.get_header("host") == ("h", None)


@pytest.mark.parametrize("lua_style", [False, True])
def test_a_call_from_another_thread_fails_at_once_and_sends_nothing(lua_style: bool) -> None:
    k, backend = kong({"kong.request.get_header": "h"}, lua_style)
    caught: list[BaseException] = []

    def elsewhere() -> None:
        for call in (lambda: k.request.get_header("host"),
                     lambda: k.raw_call("kong.client.get_consumer_groups")):
            try:
                call()
            except PDKThreadError as exc:
                caught.append(exc)

    helper = threading.Thread(target=elsewhere)
    helper.start()
    helper.join(10)
    assert [str(e).split("(")[0] for e in caught] == ["kong.request.get_header",
                                                        "kong.client.get_consumer_groups"]
    assert "on the handler's own thread" in str(caught[0])
    assert backend.calls == []
    assert k.request.get_header("host") == (("h", None) if lua_style else "h")  # its own thread


def test_raw_call_reaches_functions_the_table_does_not_know() -> None:
    k, backend = kong({"kong.client.get_consumer_groups": ["gold"]})
    assert k.raw_call("kong.client.get_consumer_groups") == ["gold"]
    with pytest.raises(ValueError, match=r"start with 'kong\.'"):
        k.raw_call("ngx.say", "hi")
    assert backend.calls == [("kong.client.get_consumer_groups", [])]


def test_idle_timeout_zero_never_expires() -> None:
    class Plugin:
        def access(self, kong: Kong) -> None:
            pass

    spec = build_spec("p", cls=Plugin, version="1.0", priority=0, schema=None, source="test")
    instance = Instance(1, spec, {}, {}, InstanceMeta(1), started_at=0.0, last_used=0.0)
    table = InstanceTable()
    table.add(instance)
    assert table.idle(now=10**9, timeout=0) == []
    assert table.idle(now=10**9, timeout=60) == [instance]

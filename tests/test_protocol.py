"""Every MsgPack:1 method and quirk, driven like Kong over a real socket, in every mode."""

from __future__ import annotations

import json
import random
import socket
import threading

import msgpack
import pytest

from kongish_pdk.testing import KongClient, RemoteError, ServerProcess, StepError
from kongish_pdk.testing.kong_client import Connection
from kongish_pdk.testing.luamsgpack import EMPTY_TABLE, LuaString


def answers(**values):
    """A PDK answer function: ``kong.request.get_header`` -> values['get_header'] etc."""
    return lambda method, args: values.get(method.rpartition(".")[2])


# ---------------------------------------------------------------- instances


def test_start_instance_answers_like_kong_expects(kong: KongClient) -> None:
    config = {"message": "Kong!"}
    result = kong.call("plugin.StartInstance",
                       {"Name": "hello", "Config": json.dumps({**config, "__seq__": 3})})
    assert set(result) == {"Name", "Id", "Config", "StartTime"}
    assert result["Name"] == "hello"
    assert isinstance(result["Id"], int) and 0 < result["Id"] < 2**31
    assert result["Config"]["message"] == "Kong!"
    assert isinstance(result["StartTime"], float)


def test_plugin_sees_config_without_kong_keys_but_meta_is_kept(kong: KongClient) -> None:
    iid = kong.start_instance("echo", {"x": 1, "route_id": "r1"}, seq=7, plugin_id="pid-1")
    trace = kong.run_event(iid, "response", answers())
    headers = dict(trace.calls[i][1] for i in range(2))
    assert json.loads(headers["x-config"]) == {"route_id": "r1", "x": 1}
    assert headers["x-meta"] == f"pid-1 7 {iid}"


@pytest.mark.parametrize("config", ["", "[]", "{}", EMPTY_TABLE])
def test_empty_configs_are_accepted(kong: KongClient, config: object) -> None:
    result = kong.call("plugin.StartInstance", {"Name": "hello", "Config": config})
    assert isinstance(result["Id"], int)


def test_bad_start_instance_requests_get_clear_errors(kong: KongClient) -> None:
    with pytest.raises(RemoteError, match="not valid JSON") as bad_json:
        kong.call("plugin.StartInstance", {"Name": "hello", "Config": "{nope"})
    with pytest.raises(RemoteError, match="'nope' is not served here") as unknown:
        kong.call("plugin.StartInstance", {"Name": "nope", "Config": "{}"})
    with pytest.raises(RemoteError, match="refusing this config") as init:
        kong.start_instance("raiser", {"fail_init": True})
    for exc in (bad_json, unknown, init):
        assert "no plugin instance" not in str(exc.value)
    assert kong.start_instance("hello") > 0  # and the server carries on


def test_each_worker_gets_its_own_instance_and_close_affects_one(kong: KongClient) -> None:
    ids = [kong.start_instance("counter", {}, plugin_id="same", seq=1) for _ in range(4)]
    assert len(set(ids)) == 4
    closed = kong.close_instance(ids[0])  # a bare integer, as Kong sends it
    assert closed["Id"] == ids[0]
    with pytest.raises(RemoteError, match=f"no plugin instance #{ids[0]}"):
        kong.handle_event(ids[0], "access")
    for iid in ids[1:]:
        assert kong.run_event(iid, "access", answers()).calls[0] == (
            "kong.response.set_header", ["x-count", "1"])


def test_instance_state_persists_across_events(kong: KongClient) -> None:
    # Grouped by process: in processes mode each worker has its own Plugin object.
    iid = kong.start_instance("counter")
    by_pid: dict[str, list[int]] = {}
    for _ in range(8):
        headers = dict(args for _, args in kong.run_event(iid, "access", answers()).calls)
        by_pid.setdefault(headers["x-pid"], []).append(int(headers["x-count"]))
    for counts in by_pid.values():
        assert counts == list(range(1, len(counts) + 1))


def test_close_instance_twice_and_instance_status(kong: KongClient) -> None:
    iid = kong.start_instance("hello", {"message": "m"})
    status = kong.call("plugin.InstanceStatus", iid)
    assert status["Id"] == iid and status["Name"] == "hello"
    kong.close_instance(iid)
    with pytest.raises(RemoteError, match="no plugin instance"):
        kong.close_instance(iid)
    with pytest.raises(RemoteError, match="no plugin instance"):
        kong.call("plugin.InstanceStatus", iid)


def test_close_hook_runs(kong: KongClient, server: ServerProcess, tmp_path) -> None:
    marker = tmp_path / "closed.txt"
    iid = kong.start_instance("closer", {"path": str(marker)})
    served = {kong.run_event(iid, "access", answers()).calls[0][1][1] for _ in range(4)}
    kong.close_instance(iid)
    server.wait_for(rf"closed instance #{iid} of plugin 'closer' \(CloseInstance\)")
    closed = [line.split()[1] for line in marker.read_text().splitlines()]
    assert sorted(closed) == sorted(served)  # once in every process that created it


# ---------------------------------------------------------------- events


def test_unknown_instance_says_no_plugin_instance(kong: KongClient) -> None:
    with pytest.raises(RemoteError) as exc:
        kong.handle_event(123, "access")
    assert isinstance(exc.value.args[0], str)
    assert "no plugin instance" in str(exc.value)


def test_unknown_event_is_an_error_without_the_restart_words(kong: KongClient) -> None:
    with pytest.raises(RemoteError) as exc:
        kong.step(987654, "x")
    assert "no plugin instance" not in str(exc.value)
    assert "987654" in str(exc.value)


def test_phase_the_plugin_lacks_is_refused(kong: KongClient) -> None:
    iid = kong.start_instance("hello")
    with pytest.raises(RemoteError, match="has no 'log' phase"):
        kong.handle_event(iid, "log")


def test_steps_are_routed_by_event_id_not_connection(server: ServerProcess) -> None:
    conns = [Connection(server.socket_path, 10, fast=False) for _ in range(3)]
    client = KongClient(server.socket_path)
    iid = client.start_instance("hello", {"message": "hi"})

    def rpc(conn: Connection, msgid: int, method: str, arg: object) -> object:
        conn.send([0, msgid, method, [arg]])
        reply = conn.read()
        assert reply[1] == msgid and reply[2] is None, reply
        return reply[3]

    first = rpc(conns[0], 1, "plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})
    second = rpc(conns[1], 2, "plugin.Step", {"EventId": first["EventId"], "Data": "a.example"})
    assert second["Data"]["Args"] == ["x-hello", "hi a.example"]
    third = rpc(conns[2], 3, "plugin.Step", {"EventId": first["EventId"]})
    assert third["Data"]["Args"] == ["x-done", "yes"]
    assert rpc(conns[0], 4, "plugin.Step", {"EventId": first["EventId"]})["Data"] == "ret"
    for conn in conns:
        conn.close()
    client.close()


def test_many_interleaved_events(kong: KongClient) -> None:
    iid = kong.start_instance("hello", {"message": "m"})
    events = {}
    for i in range(40):
        events[kong.handle_event(iid, "access")["EventId"]] = f"host-{i}"
    order = list(events)
    random.Random(7).shuffle(order)
    for event_id in order:  # answer the first PDK call of every event, in random order
        reply = kong.step(event_id, events[event_id])
        assert reply["EventId"] == event_id
        assert reply["Data"]["Args"] == ["x-hello", f"m {events[event_id]}"]
    random.Random(8).shuffle(order)
    for event_id in order:
        assert kong.step(event_id, None)["Data"]["Args"] == ["x-done", "yes"]
        assert kong.step(event_id, None)["Data"] == "ret"


def test_concurrent_clients(server: ServerProcess) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with KongClient(server.socket_path) as client:
                iid = client.start_instance("hello", {"message": str(n)})
                for i in range(30):
                    trace = client.run_event(iid, "access", answers(get_header=f"h{i}"))
                    assert trace.calls[1][1] == ["x-hello", f"{n} h{i}"]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


@pytest.mark.parametrize("method", [
    "plugin.StepMultiMap", "plugin.StepCredential", "plugin.StepConsumer", "plugin.StepRoute",
    "plugin.StepService", "plugin.StepMemoryStats", "plugin.Step",
])
def test_every_step_variant_resumes_the_event(kong: KongClient, method: str) -> None:
    iid = kong.start_instance("hello", {"message": "m"})
    event_id = kong.handle_event(iid, "access")["EventId"]
    assert kong.step(event_id, "h", method)["Data"]["Args"] == ["x-hello", "m h"]


def test_typed_steps_as_kong_sends_them(kong: KongClient) -> None:
    iid = kong.start_instance("echo")
    pdk = answers(
        get_raw_body=b"\xff\x00\xcf",  # bin, as Kong 3.x sends bodies
        get_headers={"x-multi": ["a", "b"], "host": ["h"]},
        get_uri_captures={"unnamed": {0: "/users/7", 1: "7"}, "named": EMPTY_TABLE},
        get_consumer=EMPTY_TABLE,
    )
    trace = kong.run_event(iid, "rewrite", pdk)
    assert trace.calls[4] == ("kong.service.request.set_raw_body", [b"\xff\x00\xcf"])
    logged = json.loads(trace.calls[5][1][0])
    assert logged == {
        "body_type": "bytes",
        "headers": {"host": ["h"], "x-multi": ["a", "b"]},
        "captures": {"named": {}, "unnamed": ["/users/7", "7"]},
        "consumer": {},
    }


def test_non_utf8_string_round_trips_byte_for_byte(server: ServerProcess) -> None:
    client = KongClient(server.socket_path)
    iid = client.start_instance("echo")
    event_id = client.handle_event(iid, "access")["EventId"]
    with client.connection() as conn:
        conn.send([0, 99, "plugin.Step", [{"EventId": event_id, "Data": LuaString(b"caf\xe9")}]])
        conn.unpacker = msgpack.Unpacker(raw=True)  # look at the bytes, not decoded text
        reply = conn.read()
    assert reply[3][b"Data"][b"Args"] == [b"x-out", b"caf\xe9"]
    client.close()


def test_missing_data_means_none(kong: KongClient) -> None:
    iid = kong.start_instance("echo")
    trace = kong.run_event(iid, "access", answers())  # get_header -> nil: no Data key
    assert trace.calls[1] == ("kong.response.set_header", ["x-out", "<none>"])


def test_step_error_raises_pdk_error_in_the_plugin(kong: KongClient) -> None:
    iid = kong.start_instance("echo")

    def pdk(method: str, args: list) -> object:
        if method == "kong.request.get_header":
            raise StepError("cannot load a consumer")
        return None

    trace = kong.run_event(iid, "log", pdk)
    assert trace.calls[1] == ("kong.log.notice",
                              ["'PDKError: kong.request.get_header: cannot load a consumer'"])


# ---------------------------------------------------------------- other RPCs


def test_status_and_plugin_info(kong: KongClient, server: ServerProcess) -> None:
    iid = kong.start_instance("hello")
    status = kong.call("plugin.GetStatus")
    assert status["Pid"] == server.pid
    assert iid in [i["Id"] for i in status["Plugins"]["hello"]["Instances"]]
    info = kong.call("plugin.GetPluginInfo", "hello")
    assert info["Name"] == "hello" and info["Phases"] == ["access"]
    assert info["Schema"]["fields"][0]["config"]["type"] == "record"
    with pytest.raises(RemoteError, match="not served here"):
        kong.call("plugin.GetPluginInfo", "nope")


@pytest.mark.parametrize(("method", "error"), [
    ("foo.Bar", "RPC for foo is not supported"),
    ("plugin.Cleanup", "unknown method 'plugin.Cleanup'"),
    ("plugin._loadPlugins", "unknown method 'plugin._loadPlugins'"),
    ("plugin.__init__", "unknown method"),
])
def test_nothing_else_is_dispatchable(kong: KongClient, method: str, error: str) -> None:
    with pytest.raises(RemoteError, match=error):
        kong.call(method)


def test_server_pid_notification_comes_first_and_once_per_connection(server: ServerProcess) -> None:
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(server.socket_path)
        unpacker = msgpack.Unpacker(raw=False)
        for msgid in (1, 2):
            raw.sendall(msgpack.packb([0, msgid, "plugin.GetStatus", []]))
            messages: list = []
            while not messages or messages[-1][0] != 1:
                data = raw.recv(65536)
                assert data, "the server closed the connection before replying"
                unpacker.feed(data)
                messages.extend(unpacker)
            if msgid == 1:
                assert messages[0] == [2, "serverPid", server.pid]
                assert messages[1][:3] == [1, 1, None]
            else:
                assert [m[0] for m in messages] == [1]


def test_exact_bytes_kong_sends(server: ServerProcess) -> None:
    """The StartInstance and HandleEvent bytes of kong-protocol.md 7.2 (str16 for short
    strings, as lua-MessagePack writes them) are understood."""
    start = bytes.fromhex(
        "940001b4706c7567696e2e5374617274496e7374616e63659182a44e616d65a8"
        "70792d68656c6c6fa6436f6e666967da00547b226d657373616765223a224b6f6e"
        "6721222c225f5f706c7567696e5f6964223a2236663062376331652d316132622d"
        "346333642d386539662d306131623263336434653566222c225f5f7365715f5f22"
        "3a337d")
    start = start.replace(b"\xa8py-hello", b"\xa5hello")
    raw = Connection(server.socket_path, 10, fast=False)
    raw.sock.sendall(start)
    reply = raw.read()
    assert reply[:3] == [1, 1, None] and reply[3]["Config"]["message"] == "Kong!"
    iid = reply[3]["Id"]
    handle = bytes.fromhex("940002b2706c7567696e2e48616e646c654576656e749182aa496e7374616e6365"
                           "4964") + msgpack.packb(iid) + bytes.fromhex(
                               "a94576656e744e616d65a6616363657373")
    raw.sock.sendall(handle)
    reply = raw.read()
    assert reply[:3] == [1, 2, None]
    assert reply[3]["Data"] == {"Method": "kong.request.get_header", "Args": ["host"]}
    raw.close()

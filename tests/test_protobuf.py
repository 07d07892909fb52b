"""ProtoBuf:1 over a real socket, driven like Kong's pb_rpc.lua, in every concurrency mode:
the protocol (instances, events, typed PDK calls, errors) and its reliability (failures,
exits, orphans, signals, bad input, leaks)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from kongish_pdk.protocol.protobuf import codec, wire
from kongish_pdk.protocol.protobuf.messages import pb
from kongish_pdk.testing import KongClient, ServerProcess, start_server
from kongish_pdk.testing.pb_client import (
    MethodNotFound,
    PBConnection,
    PBKongClient,
    RemoteClosed,
)

from conftest import MODE_FLAGS, ROOT, TEST_PLUGINS
from support.procstat import process_tree, resources

PB_PLUGINS = Path(__file__).resolve().parent / "protobuf_plugins"
JSON_TYPE = "application/json; charset=utf-8"
ERROR_500 = [500, '{"message":"An unexpected error occurred"}', {"Content-Type": JSON_TYPE}]


def answers(**values):
    """A PDK answer function: ``kong.request.get_header`` -> values['get_header'] etc."""
    return lambda method, args: values.get(method.rpartition(".")[2])


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared test plugins plus the ProtoBuf:1 ones, in one directory."""
    directory = tmp_path_factory.mktemp("pb-plugins")
    for source in [*TEST_PLUGINS.glob("*.py"), *PB_PLUGINS.glob("*.py")]:
        shutil.copy(source, directory / source.name)
    return directory


class PBServers:
    """Starts ProtoBuf:1 servers in one mode; every one is stopped by PID at the end."""

    def __init__(self, base: Path, plugins: Path, mode: str) -> None:
        self.base, self.plugins, self.mode = base, plugins, mode
        self.started: list[ServerProcess] = []

    def __call__(self, *flags: str, prefix: Path | None = None) -> ServerProcess:
        if prefix is None:
            prefix = self.base / f"prefix{len(self.started)}"
            prefix.mkdir()
        server = start_server(self.plugins, "--protocol", "protobuf", *MODE_FLAGS[self.mode],
                              *flags, prefix=str(prefix))
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def start(tmp_path: Path, plugins_dir: Path, mode: str) -> Iterator[PBServers]:
    servers = PBServers(tmp_path, plugins_dir, mode)
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def pb_server(tmp_path_factory: pytest.TempPathFactory, plugins_dir: Path,
              mode: str) -> Iterator[ServerProcess]:
    servers = PBServers(tmp_path_factory.mktemp(f"pb-{mode}"), plugins_dir, mode)
    yield servers("--event-timeout", "3")
    servers.stop()


@pytest.fixture
def kong(pb_server: ServerProcess) -> Iterator[PBKongClient]:
    client = PBKongClient(pb_server.socket_path)
    yield client
    client.close()


def closed_cleanly(conn: PBConnection) -> bool:
    """True if the server closed with FIN (Kong reads "closed"), not RST ("reset by peer")."""
    try:
        return conn.sock.recv(1) == b""
    except ConnectionResetError:
        return False


# ---------------------------------------------------------------- the dump


def test_dump_announces_protobuf_for_both_kinds_of_server(plugins_dir: Path) -> None:
    multi = subprocess.run([sys.executable, "-m", "kongish_pdk.cli", "-d", str(plugins_dir),
                            "--dump-plugin-info", "hello", "--protocol", "protobuf"],
                           capture_output=True, text=True, timeout=60)
    assert json.loads(multi.stdout)["Protocol"] == "ProtoBuf:1"
    single = subprocess.run([sys.executable, str(ROOT / "plugins" / "py-hello.py"), "--dump",
                             "--protocol", "protobuf"], capture_output=True, text=True,
                            timeout=60)
    doc = json.loads(single.stdout)
    assert doc["Protocol"] == "ProtoBuf:1" and doc["Plugins"][0]["Name"] == "py-hello"
    default = subprocess.run([sys.executable, str(ROOT / "plugins" / "py-hello.py"), "--dump"],
                             capture_output=True, text=True, timeout=60)
    assert json.loads(default.stdout)["Protocol"] == "MsgPack:1"


# ---------------------------------------------------------------- same plugins, same view


@pytest.mark.parametrize(("plugin", "phase", "config"), [
    ("hello", "access", {"message": "hi"}),
    ("echo", "access", {}),
    ("echo", "response", {"x": 1}),
    ("exiter", "access", {"first_call": "exit"}),
])
def test_both_protocols_give_kong_the_same_calls(kong: PBKongClient, server: ServerProcess,
                                                 plugin: str, phase: str, config: dict) -> None:
    pdk = answers(get_header="example.com")
    pb_trace = kong.run_event(kong.start_instance(plugin, config, plugin_id="p"), phase, pdk)
    with KongClient(server.socket_path) as mp:
        mp_trace = mp.run_event(mp.start_instance(plugin, config, plugin_id="p"), phase, pdk)

    def comparable(calls):  # instance ids differ between the two servers
        return [(m, [a.rsplit(" ", 1)[0] if isinstance(a, str) and a.startswith("p ") else a
                     for a in args]) for m, args in calls]

    assert comparable(pb_trace.calls) == comparable(mp_trace.calls)
    assert pb_trace.ended_by == mp_trace.ended_by
    if pb_trace.ended_by == "kong.response.exit":
        assert pb_trace.exit_args == mp_trace.exit_args


# ---------------------------------------------------------------- instances


def test_instances_start_keep_state_and_close_one_at_a_time(kong: PBKongClient) -> None:
    ids = [kong.start_instance("counter", {}, plugin_id="same") for _ in range(3)]
    assert len(set(ids)) == 3 and all(0 < i < 2**31 for i in ids)
    by_pid: dict[str, list[int]] = {}  # processes mode: each worker has its own Plugin
    for _ in range(6):
        headers = dict(args for _, args in kong.run_event(ids[1], "access", answers()).calls)
        by_pid.setdefault(headers["x-pid"], []).append(int(headers["x-count"]))
    for counts in by_pid.values():
        assert counts == list(range(1, len(counts) + 1))
    closed = kong.close_instance(ids[0])
    assert closed.instance_status.instance_id == ids[0]
    with pytest.raises(RemoteClosed):
        kong.run_event(ids[0], "access", answers())
    assert kong.run_event(ids[2], "access", answers()).calls[0][1] == ["x-count", "1"]


def test_unknown_instance_is_a_clean_close_and_kong_restarts_it(kong: PBKongClient,
                                                                pb_server: ServerProcess) -> None:
    conn = PBConnection(pb_server.socket_path, 10)
    call = pb.RpcCall(sequence=2)
    call.cmd_handle_event.instance_id = 12345
    call.cmd_handle_event.event_name = "access"
    conn.send_frames(call.SerializeToString())
    assert closed_cleanly(conn)  # FIN: Kong sees "closed" and retries, not a 500
    conn.close()
    pb_server.wait_for(r"HandleEvent failed, closing the connection \(Kong restarts the "
                       r"instance\): no plugin instance #12345")
    started: list[int] = []

    def start() -> int:
        started.append(kong.start_instance("hello"))
        return started[-1]

    used, trace = kong.handle_event(start, "access", answers(), instance_id=12345)
    assert used == started[0] and trace.ended_by == "ret"


def test_info_names_and_instance_status(kong: PBKongClient) -> None:
    names = kong.call("cmd_get_plugin_names", pb.CmdGetPluginNames()).plugin_names.names
    assert {"hello", "pdk_tour", "waiter"} <= set(names)
    info = kong.call("cmd_get_plugin_info", pb.CmdGetPluginInfo(name="hello")).plugin_info
    assert (info.name, info.version, info.priority, list(info.phases)) == (
        "hello", "0.1.0", 100, ["access"])
    assert json.loads(info.schema)["name"] == "hello"
    iid = kong.start_instance("hello")
    status = kong.call("cmd_get_instance_status",
                       pb.CmdGetInstanceStatus(instance_id=iid)).instance_status
    assert (status.name, status.instance_id) == ("hello", iid) and status.started_at > 0


# ---------------------------------------------------------------- typed PDK calls


def test_every_argument_and_result_type_crosses_the_wire(kong: PBKongClient) -> None:
    iid = kong.start_instance("pdk_tour")
    results = {
        "kong.request.get_headers": {"host": "example.com", "x-multi": ["a", "b"]},
        "kong.request.get_query": {"page": "2", "flag": True},
        "kong.request.get_header": None,
        "kong.request.get_raw_query": None,
        "kong.request.get_port": 8000,
        "kong.request.get_http_version": 1.1,
        "kong.ip.is_trusted": True,
        "kong.request.get_raw_body": b"\x00body\xff",
        "kong.request.get_uri_captures": {"unnamed": ["v1"], "named": {"version": "v1"}},
        "kong.client.get_consumer": {"id": "c1", "username": "alice", "created_at": 1700000000,
                                     "type": 0},
        "kong.ctx.shared.get": None,
        "kong.router.get_route": {"id": "r1", "paths": ["/v1"], "service": {"id": "s1"}},
        "kong.service.set_upstream": True,
    }
    trace = kong.run_event(iid, "access", lambda m, a: results.get(m))
    calls = dict(trace.calls)
    assert calls["kong.request.get_headers"] == [100]  # Kong's default max, never 0
    assert calls["kong.request.get_query"] == [50]
    assert calls["kong.ip.is_trusted"] == ["10.0.0.1"]
    assert calls["kong.ctx.shared.set"] == ["k2", {"a": [1, 2.5, "x"]}]
    assert calls["kong.log.notice"] == ["tour", 1, True]
    assert calls["kong.service.set_target"] == ["example.com", 8080]
    assert calls["kong.service.request.set_headers"] == [{"x-a": "1", "x-b": ["2", "3"]}]
    assert calls["kong.service.request.set_raw_body"] == [b"\x00\x01"]
    assert calls["kong.client.authenticate"] == [{"id": "c1", "username": "alice"},
                                                 {"id": "k1"}]
    status, body, headers = trace.exit_args
    assert status == 200 and headers == {"x-tour": "done", "Content-Type": JSON_TYPE}
    assert json.loads(body) == {
        "headers": {"host": ["example.com"], "x-multi": ["a", "b"]},
        "query": {"page": ["2"], "flag": []},
        "header": None,
        "raw_query": "",
        "port": 8000,
        "version": 1.1,
        "trusted": True,
        "body": "\x00body\xff",
        "captures": {"unnamed": ["", "v1"], "named": {"version": "v1"}},
        "consumer": {"id": "c1", "username": "alice", "created_at": 1700000000},
        "shared": None,
        "route": {"id": "r1", "paths": ["/v1"], "service": {"id": "s1"}},
        "upstream": True,
    }


def test_a_function_protobuf_cannot_carry_raises_in_the_plugin(kong: PBKongClient) -> None:
    trace = kong.run_event(kong.start_instance("uncarried"), "access", answers())
    method, args = trace.calls[0]
    assert method == "kong.log.err"
    assert args[0].startswith(
        "NotCarried: kong.nginx.get_statistics() cannot be called over ProtoBuf:1")
    assert "--protocol msgpack" in args[0]
    assert trace.calls[1] == ("kong.response.set_header", ["x-after", "still running"])


def test_non_utf8_header_round_trips_byte_for_byte(kong: PBKongClient,
                                                   pb_server: ServerProcess) -> None:
    iid = kong.start_instance("echo")
    raw = b"caf\xe9\xff"
    conn = PBConnection(pb_server.socket_path, 10)
    call = pb.RpcCall(sequence=9)
    call.cmd_handle_event.instance_id = iid
    call.cmd_handle_event.event_name = "access"
    conn.send_frames(call.SerializeToString())
    assert conn.read_frame() == b"kong.request.get_header"
    assert wire.read_string(conn.read_frame()) == "x-in"
    conn.send_frames(wire.write_string(raw))  # protobuf itself refuses such a string
    assert conn.read_frame() == b"kong.response.set_header"
    assert conn.read_frame() == wire.write_kv("x-out", raw)
    conn.send_frames(b"")
    assert conn.read_frame() == b""
    assert pb.RpcReturn.FromString(conn.read_frame()).sequence == 9
    conn.close()


# ---------------------------------------------------------------- plugin failures


def test_exceptions_fail_closed_with_kongs_500(kong: PBKongClient,
                                               pb_server: ServerProcess) -> None:
    iid = kong.start_instance("raiser")
    for phase in ("access", "rewrite", "response"):
        trace = kong.run_event(iid, phase, answers())
        assert trace.ended_by == "kong.response.exit"
        assert trace.exit_args == ERROR_500
    assert kong.run_event(iid, "log", answers()).ended_by == "ret"
    pb_server.wait_for(r"plugin 'raiser' phase 'response' .* failed \(answering 500\)")
    assert "KeyError: 'boom after a PDK call'" in pb_server.log


def test_pass_policy_lets_the_request_continue(start: PBServers) -> None:
    server = start("--on-plugin-error", "pass")
    with PBKongClient(server.socket_path) as kong:
        trace = kong.run_event(kong.start_instance("raiser"), "access", answers())
        assert trace.ended_by == "ret" and trace.calls == []


def test_start_instance_failure_closes_the_connection(kong: PBKongClient) -> None:
    with pytest.raises(RemoteClosed):
        kong.start_instance("raiser", {"fail_init": True})
    with pytest.raises(RemoteClosed):
        kong.start_instance("nope")
    assert kong.start_instance("hello") > 0


# ---------------------------------------------------------------- exit and error


@pytest.mark.parametrize(("first_call", "exit_args"), [
    ("exit", [403, "forbidden", {"x-reason": "py"}]),
    ("error", [403, '{"message":"go away"}', {"Content-Type": JSON_TYPE}]),
])
def test_exit_and_error_end_the_event_and_kong_never_answers(kong: PBKongClient,
                                                             first_call: str,
                                                             exit_args: list) -> None:
    trace = kong.run_event(kong.start_instance("exiter", {"first_call": first_call}), "access",
                           answers())
    assert trace.ended_by == "kong.response.exit" and trace.exit_args == exit_args
    assert trace.frames[0] == b"kong.response.exit"


def test_pdk_calls_after_exit_stop_the_handler_cleanly(kong: PBKongClient,
                                                       pb_server: ServerProcess) -> None:
    iid = kong.start_instance("exiter", {"first_call": "exit-then-more"})
    mark = len(pb_server.lines)
    assert kong.run_event(iid, "access", answers()).ended_by == "kong.response.exit"
    pb_server.wait_for("after exit: stopped by EventStopped", start=mark)


# ---------------------------------------------------------------- orphans and slow handlers


def begin_event(server: ServerProcess, iid: int, phase: str = "access") -> PBConnection:
    """HandleEvent on a fresh connection, up to the first PDK call (read, not answered)."""
    conn = PBConnection(server.socket_path, 10)
    call = pb.RpcCall(sequence=2)
    call.cmd_handle_event.instance_id = iid
    call.cmd_handle_event.event_name = phase
    conn.send_frames(call.SerializeToString())
    assert conn.read_frame() == b"kong.request.get_header"
    conn.read_frame()
    return conn


def read_unacknowledged_end(conn: PBConnection) -> None:
    """The hello plugin's two set_header calls and the end of its event, which the server
    sends without waiting for Kong's acknowledgements (each a read that would time out
    otherwise)."""
    for _ in range(2):
        assert conn.read_frame() == b"kong.response.set_header"
        conn.read_frame()
    assert conn.read_frame() == b""
    assert pb.RpcReturn.FromString(conn.read_frame()).sequence == 2


def test_calls_returning_empty_do_not_wait_for_kongs_acknowledgement(start: PBServers) -> None:
    server = start()
    with PBKongClient(server.socket_path) as kong:
        iid = kong.start_instance("hello")
        conn = begin_event(server, iid)
        conn.send_frames(wire.write_string("h"))
        read_unacknowledged_end(conn)
        conn.send_frames(b"", b"")  # late, as if Kong were slow
        # The connection is in step again: the next event on it runs normally.
        call = pb.RpcCall(sequence=3)
        call.cmd_handle_event.instance_id = iid
        call.cmd_handle_event.event_name = "access"
        conn.send_frames(call.SerializeToString())
        assert conn.read_frame() == b"kong.request.get_header"
        conn.read_frame()
        conn.send_frames(wire.write_string("h"))
        for _ in range(2):
            assert conn.read_frame() == b"kong.response.set_header"
            conn.read_frame()
        conn.send_frames(b"", b"")
        assert conn.read_frame() == b""
        assert pb.RpcReturn.FromString(conn.read_frame()).sequence == 3
        conn.close()


def test_kong_closing_during_a_pdk_call_ends_the_event_at_once(kong: PBKongClient,
                                                               pb_server: ServerProcess) -> None:
    iid = kong.start_instance("waiter")
    conn = begin_event(pb_server, iid)
    mark = len(pb_server.lines)
    conn.close()  # a Lua error in the PDK function: Kong drops the connection
    # The event timeout is 3 s: the stop must come from the close, not the reaper.
    pb_server.wait_for("stopped: the gateway closed the connection during "
                       "kong.request.get_header", timeout=2, start=mark)
    pb_server.wait_for("waiter unwound by EventStopped", start=mark)


def test_an_unanswered_pdk_call_is_reaped_and_its_handler_unwinds(start: PBServers) -> None:
    server = start("--event-timeout", "0.5")
    with PBKongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter")
        conn = begin_event(server, iid)
        server.wait_for(r"stopped: no Step arrived for 0.5s")
        conn.close()  # Kong gives up too (its own 60 s timeout) and drops the connection
        server.wait_for("waiter unwound by EventStopped")


def test_a_late_answer_after_the_reaper_is_not_misrouted(start: PBServers) -> None:
    server = start("--event-timeout", "0.3")
    with PBKongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter")
        conn = begin_event(server, iid)
        server.wait_for(r"stopped: no Step arrived")
        # threads mode waits for the answer on the handler's thread and closes the connection
        # when it gives up; the other modes close it when the late answer comes.
        with contextlib.suppress(BrokenPipeError):
            conn.send_frames(wire.write_string("too late"))
        assert closed_cleanly(conn)
        conn.close()
        assert kong.run_event(kong.start_instance("hello"), "access", answers()).ended_by == "ret"


def test_an_overdue_handler_is_answered_with_500_by_the_server(start: PBServers) -> None:
    server = start("--event-timeout", "0.5")
    with PBKongClient(server.socket_path) as kong:
        trace = kong.run_event(kong.start_instance("waiter", {"sleep_before": 5}), "access",
                               answers())
        assert trace.exit_args == ERROR_500
        server.wait_for(r"stopped: the handler produced nothing")


def test_handlers_run_concurrently_each_on_its_own_connection(kong: PBKongClient,
                                                              mode: str) -> None:
    # processes mode: each of the 2 workers gets 4 of the 8 events (least busy first).
    iid = kong.start_instance("waiter", {"parties": 4 if mode == "processes" else 8})
    traces = []

    def one() -> None:
        traces.append(kong.run_event(iid, "access", answers(get_header="w")))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [t.calls for t in traces] == [[("kong.request.get_header", ["x-wait"]),
                                          ("kong.response.set_header", ["x-got", "w"])]] * 8


def test_many_events_in_parallel_keep_their_own_answers(kong: PBKongClient) -> None:
    iid = kong.start_instance("hello", {"message": "m"})
    failures = []

    def worker(n: int) -> None:
        for i in range(30):
            host = f"h{n}-{i}"
            trace = kong.run_event(iid, "access", answers(get_header=host))
            if trace.calls[1] != ("kong.response.set_header", ["x-hello", f"m {host}"]):
                failures.append(trace.calls)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures


# ---------------------------------------------------------------- signals


def test_sigterm_drains_the_event_in_flight(start: PBServers) -> None:
    server = start()
    with PBKongClient(server.socket_path) as kong:
        iid = kong.start_instance("hello")
        conn = begin_event(server, iid)
        server.signal(signal.SIGTERM)
        server.wait_for("stopping: no new connections; draining 1 event")
        conn.send_frames(wire.write_string("h"))
        read_unacknowledged_end(conn)  # the event is over on the server's side
        # Kong has yet to acknowledge both sets: closing now would fail its request.
        server.wait_for("reading the gateway's last acknowledgements on 1 connection")
        conn.send_frames(b"", b"")
        assert server.wait_exit(3) == 0
        assert closed_cleanly(conn)  # both acknowledgements were read before the close
        conn.close()
    assert not os.path.exists(server.socket_path)


def test_sigterm_with_a_stuck_event_exits_within_three_seconds(start: PBServers) -> None:
    server = start()
    with PBKongClient(server.socket_path) as kong:
        conn = begin_event(server, kong.start_instance("waiter"))  # never answered
        server.signal(signal.SIGTERM)
        assert server.wait_exit(3) == 0
        conn.close()
    assert "stopped 1 event(s) still in flight at shutdown" in server.log


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("payload", [
    codec.frame(b"\xff\xff\xff"),  # not an RpcCall
    codec.frame(b""),  # an RpcCall naming no command
    codec.frame(b"kong.request.get_header"),  # a PDK name where a call belongs
    b"\x05\x00\x00",  # half a length, then the end
])
def test_malformed_frames_cost_only_their_connection(kong: PBKongClient,
                                                     pb_server: ServerProcess,
                                                     payload: bytes) -> None:
    bad = kong.send_raw(payload)
    if len(payload) >= 4:
        assert closed_cleanly(bad)
    bad.close()
    assert kong.run_event(kong.start_instance("hello"), "access", answers()).ended_by == "ret"


def test_a_frame_over_the_limit_closes_that_connection_only(start: PBServers) -> None:
    server = start("--max-frame-size", "4096")
    with PBKongClient(server.socket_path) as kong:
        bad = kong.send_raw(codec.frame(b"x" * 10_000))
        assert closed_cleanly(bad)
        bad.close()
        server.wait_for("larger than the 4096-byte limit")
        assert kong.start_instance("hello") > 0


def test_an_answer_that_is_not_the_expected_message_ends_the_event(
        kong: PBKongClient, pb_server: ServerProcess) -> None:
    iid = kong.start_instance("waiter")
    conn = begin_event(pb_server, iid)
    mark = len(pb_server.lines)
    conn.send_frames(b"\x0a\x40short")  # a String whose length runs past the frame
    assert closed_cleanly(conn)
    conn.close()
    pb_server.wait_for("Kong's answer to kong.request.get_header is not a "
                       "kong_plugin_protocol.String", start=mark)
    pb_server.wait_for("waiter unwound by EventStopped", start=mark)


def test_connections_that_send_nothing_are_harmless(kong: PBKongClient,
                                                    pb_server: ServerProcess) -> None:
    for _ in range(50):
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(pb_server.socket_path)
        probe.close()
    assert kong.start_instance("hello") > 0


def test_kong_asking_for_an_unknown_method_is_what_kong_would_see(kong: PBKongClient) -> None:
    kong.service.pop("kong.request.get_header")  # as if Kong's .proto lacked it
    with pytest.raises(MethodNotFound, match=r'method "kong\.request\.get_header" not found'):
        kong.run_event(kong.start_instance("hello"), "access", answers())


# ---------------------------------------------------------------- leaks


def test_no_growth_across_thousands_of_events(start: PBServers) -> None:
    server = start()
    with PBKongClient(server.socket_path) as kong:
        exiter = kong.start_instance("exiter", {"first_call": "exit"})
        hello = kong.start_instance("hello")
        pdk = answers(get_header="h")

        def burst(n: int) -> None:
            for _ in range(n):  # an exit abandons its connection, as Kong does
                assert kong.run_event(exiter, "access", pdk).ended_by == "kong.response.exit"
                assert kong.run_event(hello, "access", pdk).ended_by == "ret"

        burst(500)  # warm up allocators and caches
        before = resources(process_tree(server.pid))
        burst(2500)
        kong.close()
        after = resources(process_tree(server.pid))
    # Closed connections may still be on their way out of the I/O loop: allow a few.
    assert after[0] <= before[0] + 2, f"open fds grew from {before[0]} to {after[0]}"
    assert after[1] - before[1] < 2048, f"RSS grew by {after[1] - before[1]} KiB"

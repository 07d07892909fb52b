"""Never hang, never leak: plugin failures, exits, orphans, restarts, signals, bad input."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import msgpack
import pytest

from kongish_pdk.testing import KongClient, RemoteError, ServerProcess
from kongish_pdk.testing.kong_client import Connection

from conftest import MODE_FLAGS, TEST_PLUGINS
from support.procstat import process_tree, resources

ERROR_500 = {"Method": "kong.response.error", "Args": [500]}


def first_reply(kong: KongClient, plugin: str, phase: str, config: dict | None = None) -> dict:
    return kong.handle_event(kong.start_instance(plugin, config), phase)


# ---------------------------------------------------------------- plugin exceptions


def test_exception_before_first_pdk_call_fails_closed_in_the_same_reply(
        kong: KongClient, server: ServerProcess) -> None:
    reply = first_reply(kong, "raiser", "access")
    assert reply["Data"] == ERROR_500
    line = server.wait_for(rf"event #{reply['EventId']} failed \(answering 500\)")
    assert "plugin 'raiser' phase 'access'" in line.string
    assert server.count(rf"event #{reply['EventId']} ") == 1  # logged once
    assert "ValueError: boom before any PDK call" in server.log
    # The server is not stuck (kong-pdk 0.36 deadlocks here): the next event runs.
    assert kong.run_event(kong.start_instance("hello"), "access",
                          lambda m, a: "h").ended_by == "ret"


def test_exception_after_a_pdk_call_fails_closed_in_the_step_reply(
        kong: KongClient, server: ServerProcess) -> None:
    reply = first_reply(kong, "raiser", "response")
    assert reply["Data"]["Method"] == "kong.request.get_header"
    assert kong.step(reply["EventId"], "x")["Data"] == ERROR_500
    server.wait_for(rf"event #{reply['EventId']} failed")
    assert "KeyError: 'boom after a PDK call'" in server.log


def test_a_pdk_call_from_a_thread_the_plugin_started_fails_at_once(
        kong: KongClient, server: ServerProcess) -> None:
    # Nothing would read Kong's answer for that thread: waiting would last the event timeout
    # (3 s here); the reply must instead be the fail-closed 500 straight away.
    reply = first_reply(kong, "subthread", "access")
    assert reply["Data"] == ERROR_500
    server.wait_for(rf"event #{reply['EventId']} failed \(answering 500\)")
    assert ("PDKThreadError: kong.request.get_header() was called from a thread other than "
            "the one running the handler") in server.log


def test_rewrite_fails_closed_but_log_phase_just_returns(kong: KongClient,
                                                         server: ServerProcess) -> None:
    assert first_reply(kong, "raiser", "rewrite")["Data"] == ERROR_500
    reply = first_reply(kong, "raiser", "log")
    assert reply["Data"] == "ret"
    server.wait_for(rf"event #{reply['EventId']} failed \(request continues\)")


def test_pass_policy_lets_the_request_continue(start, mode: str) -> None:
    server = start(TEST_PLUGINS, "--on-plugin-error", "pass", mode=mode)
    with KongClient(server.socket_path) as kong:
        assert first_reply(kong, "raiser", "access")["Data"] == "ret"


# ---------------------------------------------------------------- exit and error


@pytest.mark.parametrize(("first_call", "method", "args"), [
    ("exit", "kong.response.exit", [403, "forbidden", {"x-reason": "py"}]),
    ("error", "kong.response.error", [403, "go away"]),
])
def test_exit_and_error_end_the_event_at_once(kong: KongClient, first_call: str, method: str,
                                              args: list) -> None:
    reply = first_reply(kong, "exiter", "access", {"first_call": first_call})
    assert reply["Data"] == {"Method": method, "Args": args}
    with pytest.raises(RemoteError, match="unknown"):  # nothing waits for Kong's answer
        kong.step(reply["EventId"], None)
    assert kong.call("plugin.GetStatus")["Events"] == 0


def test_pdk_calls_after_exit_stop_the_handler_cleanly(kong: KongClient,
                                                       server: ServerProcess) -> None:
    iid = kong.start_instance("exiter", {"first_call": "exit-then-more"})
    reply = kong.handle_event(iid, "access")
    assert reply["Data"]["Method"] == "kong.response.exit"
    server.wait_for("after exit: stopped by EventStopped")
    assert f"event #{reply['EventId']} failed" not in server.log


# ---------------------------------------------------------------- orphans and slow handlers


def test_orphaned_event_is_reaped_and_its_handler_unwinds(start, mode: str) -> None:
    server = start(TEST_PLUGINS, "--event-timeout", "0.5", mode=mode)
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter")
        reply = kong.handle_event(iid, "access")
        assert reply["Data"]["Method"] == "kong.request.get_header"
        server.wait_for(rf"event #{reply['EventId']} stopped: no Step arrived")
        assert kong.call("plugin.GetStatus")["Events"] == 0
        with pytest.raises(RemoteError, match="unknown"):
            kong.step(reply["EventId"], "late")
        server.wait_for("waiter unwound by EventStopped")


def test_overdue_handler_is_answered_by_the_server(start, mode: str) -> None:
    server = start(TEST_PLUGINS, "--event-timeout", "0.5", mode=mode)
    with KongClient(server.socket_path) as kong:
        reply = first_reply(kong, "waiter", "access", {"sleep_before": 5})
        assert reply["Data"] == ERROR_500  # answered by the reaper, not after 5 s
        server.wait_for(rf"event #{reply['EventId']} stopped: the handler produced nothing")


def test_late_reply_is_dropped_when_kong_reuses_the_connection(start, mode: str) -> None:
    server = start(TEST_PLUGINS, mode=mode)
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter", {"sleep_before": 1})
    conn = Connection(server.socket_path, 10, fast=False)
    conn.send([0, 1, "plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}]])
    conn.send([0, 2, "plugin.GetStatus", []])  # Kong gave up on request 1
    assert conn.read()[1] == 2
    line = server.wait_for(r"stopped: the gateway abandoned the request")
    assert "plugin 'waiter'" in line.string
    conn.send([0, 3, "plugin.GetStatus", []])
    assert conn.read()[1] == 3  # the stale answer to request 1 never arrives
    conn.close()


def test_handlers_run_concurrently_without_a_global_lock(start, mode: str) -> None:
    # Eight handlers wait at one barrier before their first PDK call: it only opens if all
    # eight run at the same time (kong-pdk 0.36 serialises this part with a global lock).
    # In processes mode each of the 2 workers gets 4 of the 8 events (least busy first) and
    # has its own barrier.
    server = start(TEST_PLUGINS, mode=mode)
    replies: list[dict] = []
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter", {"parties": 4 if mode == "processes" else 8})

        def one() -> None:
            replies.append(kong.handle_event(iid, "access"))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert [r["Data"]["Method"] for r in replies] == ["kong.request.get_header"] * 8


# ---------------------------------------------------------------- restarts and instances


def test_restarted_server_does_not_reuse_cached_instance_ids(start, mode: str, tmp_path) -> None:
    prefix = tmp_path / "kong"
    prefix.mkdir()
    first = start(TEST_PLUGINS, mode=mode, prefix=prefix)
    with KongClient(first.socket_path) as kong:
        old_ids = {kong.start_instance("counter") for _ in range(20)}
        old_pids = set(kong.server_pids)
    first.stop()
    second = start(TEST_PLUGINS, mode=mode, prefix=prefix)
    assert second.socket_path == first.socket_path
    with KongClient(second.socket_path) as kong:
        for old in old_ids:  # Kong's cached ids now mean nothing: it must restart them
            with pytest.raises(RemoteError, match="no plugin instance"):
                kong.handle_event(old, "access")
        new_ids = {kong.start_instance("counter") for _ in range(20)}
        assert not old_ids & new_ids
        assert set(kong.server_pids).isdisjoint(old_pids)  # serverPid tells Kong, too


def test_idle_instances_expire_and_close(start, mode: str, tmp_path) -> None:
    server = start(TEST_PLUGINS, "--instance-idle-timeout", "0.5", mode=mode)
    marker = tmp_path / "closed"
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("closer", {"path": str(marker)})
        server.wait_for(rf"closed instance #{iid} of plugin 'closer' \(idle for 0.5s\)")
        assert marker.read_text().startswith("closed ")
        with pytest.raises(RemoteError, match="no plugin instance"):
            kong.handle_event(iid, "access")


# ---------------------------------------------------------------- signals and parent death


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_the_event_in_flight_then_exits(start, mode: str, sig: int) -> None:
    server = start(TEST_PLUGINS, mode=mode)
    with KongClient(server.socket_path) as kong:
        kong.warm(2)
        iid = kong.start_instance("hello")
        reply = kong.handle_event(iid, "access")
        server.signal(sig)
        server.wait_for("stopping: no new connections; draining 1 event")
        assert kong.step(reply["EventId"], "h")["Data"]["Method"] == "kong.response.set_header"
        assert kong.step(reply["EventId"], None)["Data"]["Method"] == "kong.response.set_header"
        assert kong.step(reply["EventId"], None)["Data"] == "ret"
        assert server.wait_exit(3) == 0
    assert not os.path.exists(server.socket_path)


def test_sigterm_with_a_stuck_event_exits_within_three_seconds(start, mode: str) -> None:
    server = start(TEST_PLUGINS, mode=mode)
    with KongClient(server.socket_path) as kong:
        kong.handle_event(kong.start_instance("waiter"), "access")  # never answered
        server.signal(signal.SIGTERM)
        assert server.wait_exit(3) == 0
    assert "stopped 1 event(s) still in flight at shutdown" in server.log
    assert not os.path.exists(server.socket_path)


def test_server_exits_when_its_parent_dies(mode: str, tmp_path) -> None:
    # Kong's nginx worker 0 is the server's parent; if it dies, the server must go.
    script = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'kongish_pdk.cli',"
        f" '-d', {str(TEST_PLUGINS)!r}, '-p', {str(tmp_path)!r}, *{MODE_FLAGS[mode]!r}],"
        " stderr=subprocess.PIPE, text=True)\n"
        "for line in p.stderr:\n"
        "    if 'serving' in line:\n"  # the server is up: it knows who its parent is
        "        print(p.pid, flush=True)\n"
        "        break\n"
        "for line in p.stderr:\n"
        "    pass\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        child = int(read_line(parent, 30, "PID line of the server's parent"))
        pidfd = os.pidfd_open(child)
        parent.kill()
        parent.wait(5)
        ready, _, _ = select.select([pidfd], [], [], 10)  # readable when the child exits
        os.close(pidfd)
        assert ready, "the server outlived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(child, signal.SIGKILL)


def read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> bytes:
    """One line of ``proc``'s stdout pipe, waiting at most ``timeout`` seconds for it.

    Reads the pipe's descriptor directly (no buffer select cannot see); AssertionError
    naming ``what`` if the line is not complete in time or the pipe closes first.
    """
    assert proc.stdout is not None
    line, deadline = b"", time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise AssertionError(f"no {what} within {timeout}s (so far: {line!r})")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise AssertionError(f"no {what}: the pipe closed (exit status {proc.poll()}, "
                                 f"so far: {line!r})")
        line += chunk
    return line


# ---------------------------------------------------------------- the socket file


def test_stale_socket_file_is_replaced_and_mode_is_set(start, mode: str, tmp_path) -> None:
    prefix = tmp_path / "kong"
    prefix.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(prefix / "kongish_pluginserver.socket"))
    stale.close()  # the file stays, as after a crash
    server = start(TEST_PLUGINS, "--socket-mode", "0660", mode=mode, prefix=prefix)
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o660
    with KongClient(server.socket_path) as kong:
        assert kong.start_instance("hello") > 0


def test_default_socket_mode_is_owner_only(server: ServerProcess) -> None:
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600


@pytest.mark.parametrize(("setup", "message"), [
    ("file", "exists and is not a socket"),
    ("missing", "does not exist"),
])
def test_unusable_socket_path_is_a_clear_error(tmp_path, setup: str, message: str) -> None:
    prefix = tmp_path / "kong"
    if setup == "file":
        prefix.mkdir()
        (prefix / "kongish_pluginserver.socket").write_text("not a socket")
    done = subprocess.run([sys.executable, "-m", "kongish_pdk.cli", "-d", str(TEST_PLUGINS),
                           "-p", str(prefix)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert message in done.stderr


# ---------------------------------------------------------------- bad input


def _closed_by_server(conn: Connection) -> bool:
    try:
        return conn.sock.recv(1024) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("payload", [
    b"\xc1\xc1\xc1",  # bytes that are not msgpack
    msgpack.packb(42),  # msgpack, but not a request
    msgpack.packb([0, 1, "plugin.GetStatus"]),  # wrong arity
    msgpack.packb([0, "id", "plugin.GetStatus", []]),  # no usable message id
])
def test_malformed_frames_cost_only_their_connection(kong: KongClient, server: ServerProcess,
                                                     payload: bytes) -> None:
    bad = Connection(server.socket_path, 10, fast=False)
    bad.sock.sendall(payload)
    assert _closed_by_server(bad)
    bad.close()
    server.wait_for("closing a gateway connection")
    assert kong.run_event(kong.start_instance("hello"), "access",
                          lambda m, a: "h").ended_by == "ret"


@pytest.mark.parametrize(("request_", "error"), [
    ([0, 7, 5, []], "method must be a string"),
    ([0, 7, "plugin.GetStatus", {"a": 1}], "params must be an array"),
    ([1, 7, "plugin.GetStatus", []], "expected a request"),
    (["x", 7, "plugin.GetStatus", []], "expected a request"),
    ([0, 7, "plugin.HandleEvent", ["not a map"]], "HandleEvent expects a map"),
    ([0, 7, "plugin.Step", [5]], "Step expects a map"),
])
def test_bad_requests_get_an_error_and_the_connection_stays(server: ServerProcess,
                                                            request_: list, error: str) -> None:
    conn = Connection(server.socket_path, 10, fast=True)
    conn.send(request_)
    reply = conn.read()
    assert reply[:2] == [1, 7] and error in reply[2] and reply[3] is None
    conn.send([0, 8, "plugin.GetStatus", []])
    assert conn.read()[1] == 8
    conn.close()


def test_oversized_frame_closes_that_connection_only(start, mode: str) -> None:
    server = start(TEST_PLUGINS, "--max-frame-size", "4096", mode=mode)
    with KongClient(server.socket_path) as kong:
        bad = Connection(server.socket_path, 10, fast=True)
        bad.send([0, 1, "plugin.GetPluginInfo", ["x" * 10_000]])
        assert _closed_by_server(bad)
        bad.close()
        server.wait_for("frame larger than the 4096-byte limit")
        assert kong.start_instance("hello") > 0


def test_connections_that_send_nothing_are_harmless(kong: KongClient,
                                                    server: ServerProcess) -> None:
    for _ in range(50):  # Kong 3.1-3.4 probed the socket like this every 0.1 s
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(server.socket_path)
        probe.close()
    assert kong.start_instance("hello") > 0


# ---------------------------------------------------------------- leaks


def test_no_growth_across_5000_exit_first_events(start, mode: str) -> None:
    server = start(TEST_PLUGINS, mode=mode)
    with KongClient(server.socket_path, fast=True) as kong:
        kong.warm(4)
        iid = kong.start_instance("exiter", {"first_call": "exit"})
        for _ in range(1000):  # warm up allocators and caches
            kong.handle_event(iid, "access")
        before = resources(process_tree(server.pid))
        for _ in range(5000):
            assert kong.handle_event(iid, "access")["Data"]["Method"] == "kong.response.exit"
        after = resources(process_tree(server.pid))
        assert kong.call("plugin.GetStatus")["Events"] == 0
    assert after[0] == before[0], f"open fds grew from {before[0]} to {after[0]}"
    assert after[1] - before[1] < 2048, f"RSS grew by {after[1] - before[1]} KiB"

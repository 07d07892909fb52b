"""What only the processes mode (-m) promises: per-worker state, every core, dead workers."""

from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from kongish_pdk.testing import KongClient, ServerProcess
from kongish_pdk.testing.kong_client import Connection
from kongish_pdk.workers.process_pipe import Pipe

from conftest import EXAMPLES, TEST_PLUGINS
from support.events import set_headers
from support.procstat import process_tree, resources
from support.waiting import wait_until


def test_state_persists_per_worker_and_one_instance_uses_every_worker(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("counter")
        seen = [set_headers(kong, iid) for _ in range(20)]
    by_pid: dict[str, list[int]] = {}
    for headers in seen:
        by_pid.setdefault(headers["x-pid"], []).append(int(headers["x-count"]))
    assert len(by_pid) == 2  # one hot config still reaches both workers
    for counts in by_pid.values():  # and each worker's Plugin object keeps counting
        assert counts == list(range(1, len(counts) + 1))


def test_a_dead_worker_fails_its_events_and_is_replaced(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("crasher")
        reply = kong.handle_event(iid, "access")
        crash = kong.step(reply["EventId"], "yes")
        assert crash["Data"] == {"Method": "kong.response.error", "Args": [500]}
        server.wait_for(r"worker process \d+ exited \(3\) with 1 event\(s\) in flight")
        server.wait_for(rf"event #{reply['EventId']} failed .*died \(exit code 3\)")
        pids = {set_headers(kong, iid)["x-pid"] for _ in range(6)}
        assert len(pids) == 2  # the replacement serves, with the survivor
        assert kong.call("plugin.GetStatus")["Events"] == 0


def test_a_replacement_worker_builds_the_plugin_from_the_instance_config(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("greeter", {"greeting": "hi"})
        seen = [set_headers(kong, iid) for _ in range(4)]
        pids = {headers["x-pid"] for headers in seen}
        assert len(pids) == 2
        victim = min(pids)
        os.kill(int(victim), signal.SIGKILL)
        server.wait_for(rf"worker process {victim} exited \(-9\)")
        deadline = time.monotonic() + 10
        while not {headers["x-pid"] for headers in seen} - pids:  # until the replacement serves
            assert time.monotonic() < deadline, "no replacement worker ran an event"
            seen.append(set_headers(kong, iid))
    assert {headers["x-greeting"] for headers in seen} == {"hi"}  # not None, as from {}
    assert {headers["x-inits"] for headers in seen} == {"1"}


def test_events_racing_a_slow_init_share_one_object_built_from_the_config(start,
                                                                          tmp_path) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    gate_path = str(tmp_path / "gate")
    released = threading.Event()
    probed: queue.SimpleQueue[str] = queue.SimpleQueue()

    def held(method: str, args: object) -> None:  # keeps every event in flight until released
        assert released.wait(30)

    def probe(method: str, args: object) -> None:
        probed.put(method)
        held(method, args)

    with KongClient(server.socket_path) as kong, \
            socket.socket(socket.AF_UNIX) as gate, ThreadPoolExecutor(6) as pool:
        # No gate yet: StartInstance builds the object in one worker at once.
        iid = kong.start_instance("greeter", {"greeting": "hi", "gate": gate_path})
        other = kong.start_instance("hello")
        gate.bind(gate_path)
        gate.listen()
        gate.settimeout(30)
        runs = [pool.submit(set_headers, kong, iid, held) for _ in range(4)]
        wait_until(lambda: kong.call("plugin.GetStatus")["Events"] >= 4,  # all four sent out
                   what="start of all four events")
        # Two by two (least busy): the other worker got its first event with the config and
        # its second without, while the first one's __init__ is held at the gate. One more
        # event each, read after those (a worker reads its channel in order), tells when both
        # workers have seen every START.
        runs += [pool.submit(set_headers, kong, other, probe) for _ in range(2)]
        for _ in range(2):
            probed.get(timeout=30)
        waiting, _ = gate.accept()
        waiting.close()
        released.set()
        seen = [run.result(timeout=30) for run in runs[:4]]
        assert all(run.result(timeout=30) for run in runs[4:])
    assert len({headers["x-pid"] for headers in seen}) == 2
    assert {headers["x-greeting"] for headers in seen} == {"hi"}
    assert {headers["x-inits"] for headers in seen} == {"1"}  # one object per worker


def test_an_event_stopped_behind_a_slow_init_no_longer_counts_as_busy(start, tmp_path) -> None:
    # The server sends each event to the worker with the fewest in flight, so an event it
    # still counted after it was stopped would keep every single event from that worker.
    server = start(TEST_PLUGINS, "-m", "--workers", "2", "--event-timeout", "1")
    gate_path = str(tmp_path / "gate")
    with KongClient(server.socket_path) as kong, \
            socket.socket(socket.AF_UNIX) as gate, ThreadPoolExecutor(2) as pool:
        kong.warm(3)
        probe = kong.start_instance("counter")
        iid = kong.start_instance("greeter", {"gate": gate_path})  # built in one worker now
        gate.bind(gate_path)
        gate.listen()
        gate.settimeout(30)
        # Never stepped, the one in the worker that has the object stays in flight there, so
        # the other goes to the other worker, which builds the object and queues the event.
        runs = [pool.submit(kong.handle_event, iid, "access") for _ in range(2)]
        held, _ = gate.accept()  # that __init__ waits here until the end of the test
        with held:
            replies = [run.result(timeout=30) for run in runs]
            stopped = [r for r in replies if r["Data"]["Method"] == "kong.response.error"]
            assert len(stopped) == 1  # the queued one, answered by the server as it reaped it
            server.wait_for(rf"event #{stopped[0]['EventId']} stopped: the handler produced")
            pids: set[str] = set()
            deadline = time.monotonic() + 10
            while len(pids) < 2:  # one event at a time: each goes to the least busy worker
                assert time.monotonic() < deadline, f"only worker {pids} got events"
                pids.add(set_headers(kong, probe)["x-pid"])
        assert kong.call("plugin.GetStatus")["Events"] == 0


def test_a_worker_that_cannot_be_replaced_is_logged_and_the_others_serve(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path) as kong:
        kong.warm(3)  # every connection the test needs, before the server runs out of them
        iid = kong.start_instance("counter")
        victim, survivor = sorted({set_headers(kong, iid)["x-pid"] for _ in range(4)})
        _kill_unreplaceable(server, victim)
        assert {set_headers(kong, iid)["x-pid"] for _ in range(4)} == {survivor}
        assert kong.call("plugin.GetStatus")["Events"] == 0


def test_with_no_worker_left_events_fail_at_once(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "1", "--event-timeout", "30")
    with KongClient(server.socket_path) as kong:
        kong.warm(2)
        iid = kong.start_instance("counter")
        _kill_unreplaceable(server, set_headers(kong, iid)["x-pid"])
        reply = kong.handle_event(iid, "access")  # not after the 30 s event timeout
        assert reply["Data"] == {"Method": "kong.response.error", "Args": [500]}
        server.wait_for("no worker process is running")
        assert kong.call("plugin.GetStatus")["Events"] == 0


def _kill_unreplaceable(server: ServerProcess, pid: str) -> None:
    """SIGKILL a worker after taking the server's spare descriptors, so the replacement's
    socketpair fails with EMFILE."""
    in_use = len(os.listdir(f"/proc/{server.pid}/fd"))
    hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (in_use, hard))
    os.kill(int(pid), signal.SIGKILL)
    server.wait_for(rf"cannot start a worker process to replace {pid}: .*Too many open files")


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_every_start_method_loads_the_plugins_in_the_workers(start, method: str) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2", "--start-method", method)
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("counter")
        assert len({set_headers(kong, iid)["x-pid"] for _ in range(4)}) == 2


def test_single_file_server_runs_in_worker_processes(tmp_path) -> None:
    command = [sys.executable, str(EXAMPLES / "py-hello.py"), "-p", str(tmp_path),
               "-m", "--workers", "2", "--start-method", "spawn"]
    with ServerProcess(command, str(tmp_path)) as server:
        assert server.socket_path.endswith("/py-hello.socket")
        with KongClient(server.socket_path) as kong:
            iid = kong.start_instance("py-hello", {"message": "hi"})
            pids = set()
            for _ in range(4):
                headers = set_headers(kong, iid, lambda m, a: "example.com")
                assert headers["x-hello-from-python"] == "Python says hi to example.com"
                pids.add(headers["x-python-pid"])
            assert len(pids) == 2 and str(server.pid) not in pids


def test_no_growth_in_any_process_across_5000_events(start) -> None:
    server: ServerProcess = start(TEST_PLUGINS, "-m", "--workers", "2")
    with KongClient(server.socket_path, fast=True) as kong:
        kong.warm(4)
        exiting = kong.start_instance("exiter", {"first_call": "exit"})
        normal = kong.start_instance("hello")
        for _ in range(500):
            kong.handle_event(exiting, "access")
            kong.run_event(normal, "access", lambda m, a: "h")
        pids = process_tree(server.pid)
        assert len(pids) >= 3  # the server and its two workers (plus forkserver)
        before = resources(pids)
        for _ in range(2500):
            kong.handle_event(exiting, "access")
            kong.run_event(normal, "access", lambda m, a: "h")
        after = resources(pids)
        assert kong.call("plugin.GetStatus")["Events"] == 0
    assert after[0] == before[0], f"open fds grew from {before[0]} to {after[0]}"
    assert after[1] - before[1] < 4096, f"RSS grew by {after[1] - before[1]} KiB"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])  # the ones that unpickle it
def test_workers_of_a_msgpack_server_never_import_protobuf(start, method: str) -> None:
    # The protocol's call check reaches the workers as a function only for ProtoBuf:1.
    server = start(TEST_PLUGINS, "-m", "--workers", "1", "--start-method", method,
                   env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    with KongClient(server.socket_path) as kong:
        set_headers(kong, kong.start_instance("hello"), lambda m, a: "h")
    imported = [line.rsplit("|", 1)[-1].strip() for line in server.log.splitlines()
                if "import time:" in line]
    # The check itself works: the server imports it too, so a second trace of it must come
    # from the process the workers' modules are imported in (the worker, or the forkserver)
    assert imported.count("kongish_pdk.workers.process_child") >= 2
    assert not [name for name in imported if name.startswith("google")]


def test_dump_starts_no_workers(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "kongish_pdk.cli", "-d", str(TEST_PLUGINS),
                           "--dump", "-m", "--workers", "4"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0
    assert "worker processes" not in done.stderr


class _LargeReplies(KongClient):
    """A Kong client whose reader takes frames above msgpack's default 100 MiB buffer (Kong's
    own reader has no such limit)."""

    def _open(self) -> Connection:
        conn = super()._open()
        conn.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        return conn


def test_a_body_over_100_mib_crosses_the_worker_channel(start) -> None:
    server = start(TEST_PLUGINS, "-m", "--workers", "2")
    with _LargeReplies(server.socket_path, timeout=30) as kong:
        big = kong.start_instance("bigexit", {"mib": 101})
        normal = kong.start_instance("hello")
        reply = kong.handle_event(big, "access")
        assert reply["Data"]["Method"] == "kong.response.exit"
        status, body = reply["Data"]["Args"][:2]
        assert status == 200 and len(body) == 101 * 1024 * 1024
        del reply, body
        assert set_headers(kong, normal, lambda m, a: "h")["x-hello"] == "hello h"
    assert "exited" not in server.log  # no worker was lost to it


def test_a_closed_channel_never_writes_to_a_reused_descriptor() -> None:
    # A dead worker's events get Steps until they are failed; sending them must fail, not
    # land in the socket (maybe a gateway connection) that now has the channel's number.
    ours, theirs = socket.socketpair()
    pipe = Pipe(ours)
    number = pipe.fd
    pipe.close()
    newcomer, peer = socket.socketpair()
    try:
        assert number in (newcomer.fileno(), peer.fileno())  # the number was reused
        with pytest.raises(OSError):
            pipe.send([3, 7, "value", None])
        for sock in (newcomer, peer):
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(100)
    finally:
        for sock in (theirs, newcomer, peer):
            sock.close()

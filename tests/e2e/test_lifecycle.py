"""Instances per nginx worker, Kong's recovery paths, and the plugin server restarting under
traffic while nginx keeps serving. Tests marked ``@BOTH_PROTOCOLS`` run over ProtoBuf:1
too, where Kong's recovery path is the connection closing ("closed") instead of the
"no plugin instance" error, and a failed event is a 500 instead of a skipped plugin."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import BOTH_PROTOCOLS, E2E
from .minikong import (
    Gateway,
    GatewayError,
    Plugin,
    PluginServer,
    Response,
    wait_for_lines,
    wait_until,
)

pytestmark = pytest.mark.e2e

HELLO = "x-hello-from-python"


def responses_from_both_workers(gw: Gateway, path: str, limit: int = 400) -> dict[str, Response]:
    """Request until each worker has answered (new connection each time, spread by reuseport)."""
    seen: dict[str, Response] = {}
    for _ in range(limit):
        resp = gw.get(path)
        assert resp.worker is not None
        seen.setdefault(resp.worker, resp)
        if len(seen) == gw.workers:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered {limit} requests")


def started_instances(e2e: E2E, plugin: str) -> list[int]:
    assert e2e.server is not None
    pattern = re.compile(rf"started instance #(\d+) of plugin '{re.escape(plugin)}'")
    return [int(m.group(1)) for m in map(pattern.search, e2e.server.log.splitlines()) if m]


def test_each_worker_starts_its_own_instance_with_kongs_config_keys(e2e: E2E) -> None:
    probe = Plugin("e2e-probe", {"path": str(e2e.path("unused"))})
    gw = e2e.gateway({"/p": [probe]})
    by_worker = responses_from_both_workers(gw, "/p/x")
    metas = [json.loads(r.header("x-probe-meta") or "") for r in by_worker.values()]
    assert {m["plugin_id"] for m in metas} == {probe.id}
    assert {m["ws_id"] for m in metas} == {gw.config.workspace_id}
    route_id = gw.config.routes[0].id
    assert {m["key"] for m in metas} == {
        f"plugins:e2e-probe:{route_id}:::{gw.config.workspace_id}"}
    # __seq__ comes from a counter shared by the workers: each worker has its own value
    assert len({m["seq"] for m in metas}) == 2
    assert len({m["instance_id"] for m in metas}) == 2
    # the workers' cached instances are reused: one StartInstance per worker, however many
    # requests
    for _ in range(20):
        assert gw.get("/p/x").status == 200
    assert sorted(started_instances(e2e, "e2e-probe")) == sorted(m["instance_id"] for m in metas)


@BOTH_PROTOCOLS
def test_an_expired_instance_is_restarted_on_no_plugin_instance(e2e: E2E) -> None:
    gw = e2e.gateway({"/hello": [Plugin("py-hello")]},
                     server_flags=["--instance-idle-timeout", "1"])
    responses_from_both_workers(gw, "/hello")  # so whichever worker answers next has one
    server = e2e.server
    assert server is not None
    expired = r"instance #\d+ of plugin 'py-hello' \(idle for"
    server.wait_for_count(expired, 2, timeout=10)  # both workers' instances
    before = len(started_instances(e2e, "py-hello"))
    resp = gw.get("/hello")
    assert resp.status == 200
    assert resp.header(HELLO)  # the same request recovered: StartInstance, then the event
    if e2e.protobuf:
        # no error reply in ProtoBuf:1: the server closes the connection, Kong reads "closed"
        gw.wait_for_log(r"\[warn\].*py-hello: HandleEvent: closed; restarting the instance")
        server.wait_for(r"HandleEvent failed, closing the connection \(Kong restarts the "
                        r"instance\): no plugin instance")
    else:
        gw.wait_for_log(r"\[warn\].*py-hello: no plugin instance #\d+; restarting the instance")
    assert len(started_instances(e2e, "py-hello")) == before + 1


def test_a_kong_39_style_setup_one_dump_per_plugin_on_a_shared_socket(e2e: E2E) -> None:
    e2e.start_server()
    servers = [e2e.plugin_server("py-hello", plugin="py-hello"),
               e2e.plugin_server("py-key-auth", plugin="py-key-auth")]
    gw = e2e.gateway({"/api": [Plugin("py-hello"), Plugin("py-key-auth",
                                                          {"keys": {"k": "carol"}})]},
                     servers=servers)
    assert gw.get("/api").status == 401
    resp = gw.get("/api", {"apikey": "k"})
    assert resp.status == 200
    assert resp.header(HELLO)
    assert resp.json()["headers"]["x-consumer-username"] == "carol"


def test_a_query_cmd_that_prints_no_json_stops_nginx_from_starting(e2e: E2E) -> None:
    e2e.start_server()
    broken = PluginServer("broken", "/nonexistent.sock", "echo not-json")
    with pytest.raises(GatewayError, match="failed decoding plugin info"):
        e2e.gateway({"/x": []}, servers=[broken])
    e2e.gateways[-1].allow_errors(r"failed decoding plugin info")


# ---------------------------------------------------------------------------- restart


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP response at all
    plugin_ran: bool
    error: str = ""


class Traffic:
    """Sequential requests in a thread, each on a new connection, every outcome recorded."""

    def __init__(self, gw: Gateway, path: str) -> None:
        self.gw = gw
        self.path = path
        self.outcomes: list[Outcome] = []
        self._recorded = threading.Condition()  # notified on each new outcome
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                resp = self.gw.get(self.path, timeout=10)
                outcome = Outcome(started, time.monotonic(), resp.status,
                                  resp.header(HELLO) is not None)
            except OSError as exc:
                outcome = Outcome(started, time.monotonic(), None, False, repr(exc))
            with self._recorded:
                self.outcomes.append(outcome)
                self._recorded.notify_all()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_for(self, count: int, since: float, timeout: float = 15.0) -> None:
        """Until ``count`` requests that started after ``since`` have completed."""
        deadline = time.monotonic() + timeout
        with self._recorded:
            while sum(o.started >= since for o in self.outcomes) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"traffic stalled: {self.outcomes[-5:]}"
                assert self._thread.is_alive()
                # woken by each new outcome; once a second anyway, to see a dead thread
                self._recorded.wait(min(left, 1.0))


@BOTH_PROTOCOLS
def test_restarting_the_plugin_server_under_traffic(e2e: E2E) -> None:
    gw = e2e.gateway({"/hello": [Plugin("py-hello")]})
    # Expected while the server is away: RPCs fail (connect refused, socket gone, connection
    # closed mid-call) and are logged, and a request that must start an instance gets 500.
    gw.allow_errors(r"\[minikong\] (starting instance: |py-hello access)",
                    # nginx itself logs a failed connect() to a Unix socket at [crit]
                    r"\[(crit|error)\].* connect\(\) to unix:\S+ failed "
                    r"\((2: No such file or directory|111: Connection refused)\)",
                    # a pooled connection the stopping server closed with our request unread
                    r"\[error\].* recv\(\) failed \(104: Connection reset by peer\)",
                    # ... or closed before our request went out
                    r"\[error\].* send\(\) failed \(32: Broken pipe\)")
    responses_from_both_workers(gw, "/hello")  # both workers hold a cached instance id
    old_pid = e2e.server.pid if e2e.server else 0
    with Traffic(gw, "/hello") as traffic:
        traffic.wait_for(20, since=0)
        window_start = time.monotonic()
        server = e2e.restart_server()
        window_end = time.monotonic()  # the new server is listening
        traffic.wait_for(100, since=window_end)
    assert server.pid != old_pid

    before = [o for o in traffic.outcomes if o.ended < window_start]
    during = [o for o in traffic.outcomes if o.ended >= window_start and o.started < window_end]
    after = [o for o in traffic.outcomes if o.started >= window_end]
    # nginx kept serving: every request got an HTTP response
    assert all(o.status is not None for o in traffic.outcomes), [
        o for o in traffic.outcomes if o.status is None][:3]
    assert before and all(o.status == 200 and o.plugin_ran for o in before)
    # in the window, Kong lets a request with a cached instance through without the plugin
    # (MsgPack:1) or answers 500 (ProtoBuf:1, fail-closed), and fails one that needs
    # StartInstance
    assert {o.status for o in during} <= {200, 500}, during
    if e2e.protobuf:
        assert all(o.plugin_ran for o in during if o.status == 200), during
    # after the window, no error and the plugin works again, from the first request on
    assert len(after) >= 100
    failed = [o for o in after if o.status != 200 or not o.plugin_ran]
    assert not failed, failed[:5]
    assert len(started_instances(e2e, "py-hello")) >= 1
    if e2e.protobuf:
        # no serverPid in ProtoBuf:1: the new server does not know the workers' cached
        # instance ids, closes the connection, and Kong restarts the instance ("closed")
        gw.wait_for_log(r"\[warn\].*py-hello: HandleEvent: closed; restarting the instance")
    else:
        # the workers noticed the new server (serverPid) and restarted their instances
        gw.wait_for_log(r"serverPid of kongish changed from \d+ to " + str(server.pid))


# ---------------------------------------------------------------------------- start_cmd


def pid_gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet: it no longer runs)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_nginx_worker_0_starts_respawns_and_stops_the_plugin_server(e2e: E2E) -> None:
    gw = e2e.gateway({"/hello": [Plugin("py-hello")]}, servers=[e2e.supervised_server()])
    # killing the server is this test's doing: nginx reaps it and logs the signal
    gw.allow_errors(r"\[alert\].* unknown process \d+ exited on signal 9",
                    r"\[minikong\] (starting instance: |py-hello access)",
                    r"\[(crit|error)\].* connect\(\) to unix:\S+ failed "
                    r"\((2: No such file or directory|111: Connection refused)\)")
    serving = r"serving .* on \S+kongish_pluginserver\.socket"
    # nginx points its workers' stderr at the error log: the server's output lands there
    wait_until(lambda: len(re.findall(serving, gw.error_log())) == 1, what="server start")
    (started,) = gw.wait_for_log(r"\[pluginserver\] started, pid \d+")
    first_pid = int(started.rsplit("pid ", 1)[1].split(",")[0])
    assert gw.get("/hello").header(HELLO)

    os.kill(first_pid, signal.SIGKILL)  # Kong respawns after any exit
    gw.wait_for_log(rf"\[alert\].* unknown process {first_pid} exited on signal 9")
    gw.wait_for_log(rf"external pluginserver 'kongish' terminated \(pid {first_pid}\)")
    lines = gw.wait_for_log(r"\[pluginserver\] started, pid \d+", count=2)
    second_pid = int(lines[1].rsplit("pid ", 1)[1].split(",")[0])
    assert second_pid != first_pid
    wait_until(lambda: len(re.findall(serving, gw.error_log())) == 2, what="server restart")
    resp = gw.get("/hello")
    assert resp.status == 200 and resp.header(HELLO), resp

    gw.stop()  # exit_worker sends SIGTERM; the server also watches its parent (worker 0)
    # stop() SIGKILLs a server still running after its bound, so being gone is not enough:
    # the server must have exited by itself, not been among those stop() killed
    assert second_pid not in gw.killed_servers, \
        f"the server {second_pid} outlived nginx and was killed: {gw.killed_servers}"
    wait_until(lambda: pid_gone(second_pid), what=f"exit of the server {second_pid}")
    assert "successfully stopped pluginserver 'kongish'" in gw.error_log()


@BOTH_PROTOCOLS
def test_concurrent_traffic_through_every_phase(e2e: E2E) -> None:
    # 16 clients at once, each request through access, response and log handlers: every
    # request gets every plugin's effect, and every log line arrives.
    sink = e2e.path("concurrent.jsonl")
    gw = e2e.gateway({"/mix": [Plugin("py-hello"),
                               Plugin("py-response-rewrite", {"add_fields": {"seen": "yes"}}),
                               Plugin("py-log", {"path": str(sink)})]})
    total = 240

    def one(i: int) -> Response:
        return gw.get(f"/mix/{i}")

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(total)))
    bad = [r for r in responses if r.status != 200 or not r.header(HELLO)
           or r.json().get("seen") != "yes" or r.header("x-response-rewritten") != "200"]
    assert not bad, bad[:3]
    assert {r.json()["path"] for r in responses} == {f"/mix/{i}" for i in range(total)}
    lines = wait_for_lines(sink, total)
    assert sorted(e["uri"] for e in lines) == sorted(f"/mix/{i}" for i in range(total))
    assert {e["status"] for e in lines} == {200}

"""A lean MsgPack:1 load generator that behaves like a Kong worker.

One process, one selectors loop, msgpack's C extension: ``concurrency`` virtual requests each
run events back to back (HandleEvent, then one Step per PDK call, until "ret" or a terminal
call). Connections are taken from the pool most-recently-returned first, as OpenResty's
keepalive pool does: a Kong coroutine returns its connection and takes it straight back for
its next call, so most of an event's steps arrive on one connection, and some hop when the
pool is contended. (The correctness tests use ``KongClient``, which makes every step hop.)
The same client drives every server in a comparison, so its own cost cancels out.
"""

from __future__ import annotations

import collections
import json
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from kongish_pdk.pdk.table import BY_NAME, TERMINAL
from kongish_pdk.testing.kong_client import step_method

# The PDK calls Kong answers with plugin.StepMultiMap (any other: plugin.Step, as before),
# from the PDK table; a set, so the hot path is one membership test. pb_loadgen imports it.
MULTIMAP = frozenset(name for name in BY_NAME if step_method(name) == "plugin.StepMultiMap")


@dataclass
class Result:
    events: int
    seconds: float
    latencies: list[float] = field(repr=False)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class _Conn:
    __slots__ = ("on_reply", "sock", "unpacker")

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         unicode_errors="surrogateescape")
        self.on_reply: Callable[[Any, Any], None] | None = None


class LoadGen:
    def __init__(self, path: str, concurrency: int,
                 answer: Callable[[str, list[Any]], Any] | None = None) -> None:
        self.path = path
        self.concurrency = concurrency
        self.answer = answer or (lambda method, args: "bench.example")
        self._ids = iter(range(1, 1 << 62))
        self._selector = selectors.DefaultSelector()
        self._conns = [_Conn(path) for _ in range(concurrency)]
        self._free: collections.deque[_Conn] = collections.deque(self._conns)
        for conn in self._conns:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def close(self) -> None:
        for conn in self._conns:
            self._selector.unregister(conn.sock)
            conn.sock.close()
        self._selector.close()

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, arg: Any, on_reply: Callable[[Any, Any], None]) -> None:
        conn = self._free.pop()  # LIFO, like ngx_http_lua's keepalive pool
        conn.on_reply = on_reply
        conn.sock.sendall(msgpack.packb([0, next(self._ids), method, [arg]]))

    def _pump(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            conn: _Conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed a connection")
            conn.unpacker.feed(data)
            for message in conn.unpacker:
                if message[0] == 2:
                    continue  # serverPid
                callback, conn.on_reply = conn.on_reply, None
                self._free.append(conn)
                assert callback is not None
                callback(message[2], message[3])

    def run_until(self, until: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("the server stopped answering")
            self._pump(1.0)

    # ------------------------------------------------------------------ RPCs

    def start_instance(self, name: str, config: dict[str, Any]) -> int:
        result: dict[str, Any] = {}

        def done(error: Any, value: Any) -> None:
            if error:
                raise RuntimeError(error)
            result.update(value)

        self._call("plugin.StartInstance", {"Name": name, "Config": json.dumps(config)}, done)
        self.run_until(lambda: bool(result))
        return int(result["Id"])

    def drive(self, instance_id: int, phase: str, *, seconds: float | None = None,
              events: int | None = None) -> Result:
        """Run events back to back on every virtual request, for ``seconds`` or ``events``."""
        started = time.perf_counter()
        stop_at = started + seconds if seconds else None
        latencies: list[float] = []
        counters = {"started": 0, "active": 0, "errors": 0}

        def more() -> bool:
            if events is not None:
                return counters["started"] < events
            return time.perf_counter() < stop_at  # type: ignore[operator]

        def begin() -> None:
            counters["started"] += 1
            counters["active"] += 1
            t0 = time.perf_counter()
            event_id = [0]

            def on_data(error: Any, value: Any) -> None:
                if error:
                    counters["errors"] += 1
                    return finish()
                event_id[0] = value["EventId"]
                data = value.get("Data")
                if data == "ret" or not isinstance(data, dict):
                    return finish()
                method = data["Method"]
                if method in TERMINAL:
                    return finish()
                answer = self.answer(method, data.get("Args") or [])
                step = "plugin.StepMultiMap" if method in MULTIMAP else "plugin.Step"
                params = {"EventId": event_id[0]}
                if answer is not None:
                    params["Data"] = answer
                self._call(step, params, on_data)

            def finish() -> None:
                latencies.append(time.perf_counter() - t0)
                counters["active"] -= 1
                if more():
                    begin()

            self._call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase},
                       on_data)

        for _ in range(self.concurrency):
            if more():
                begin()
        self.run_until(lambda: counters["active"] == 0, timeout=(seconds or 0) + 120)
        elapsed = time.perf_counter() - started
        return Result(len(latencies), elapsed, latencies, counters["errors"])

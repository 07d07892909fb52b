"""Lean Kong-like load generators for both protocols: one process, one selectors loop.

``concurrency`` virtual requests each run events back to back; answers are encoded once per
PDK method and reused, so the client costs as little as Python allows and the same kind of
client drives every server in a comparison. (``bench/loadgen.py`` is ``bench/run.py``'s
MsgPack:1 client; it records every event's latency, a cost this ProtoBuf:1 client does not
have: a ProtoBuf:1-vs-MsgPack:1 comparison needs two equally lean clients.)
"""

from __future__ import annotations

import collections
import json
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
from loadgen import MULTIMAP, TERMINAL

Answer = Callable[[str], Any]
_LENGTH = struct.Struct("<I")


def bench_answer(method: str) -> Any:
    """What the bench plugins' PDK reads return."""
    if method.endswith(".get_header"):
        return "bench.example"
    if method == "kong.request.get_path":
        return "/bench"
    if method == "kong.request.get_method":
        return "GET"
    return None


class _Driver:
    """Runs events back to back on ``concurrency`` virtual requests; counts finished ones
    (``finished`` and ``errors`` count over the driver's life; each run returns its own)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.selector = selectors.DefaultSelector()
        self.finished = 0
        self.errors = 0
        self._active = 0
        self._stop_at = 0.0
        self._to_start = 0  # events a run_events() may still start

    def begin(self) -> None:  # start one event (subclasses)
        raise NotImplementedError

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self.selector.close()

    def done(self, ok: bool = True) -> None:
        self._active -= 1
        if ok:
            self.finished += 1
        else:
            self.errors += 1
        if self._to_start > 0:
            self._to_start -= 1
            self._start(1)
        elif time.monotonic() < self._stop_at:
            self._start(1)

    def run(self, seconds: float) -> int:
        """The events that finished within ``seconds`` (those still in flight then finish
        too, uncounted)."""
        before = self.finished
        self._stop_at = time.monotonic() + seconds
        self._start(self.concurrency)
        return self._serve(self._stop_at) - before

    def run_events(self, events: int) -> int:
        """Run exactly ``events`` events (``concurrency`` at a time) to their end; how many
        finished without an error."""
        before = self.finished
        self._stop_at = 0.0
        first = min(events, self.concurrency)
        self._to_start = events - first
        self._start(first)
        self._serve(None)
        return self.finished - before

    def _start(self, events: int) -> None:
        for _ in range(events):
            self._active += 1
            self.begin()

    def _serve(self, count_at: float | None, patience: float = 60.0) -> int:
        """Handle the server's answers until no event is in flight; ``finished`` as it was
        at ``count_at`` (None: at the end). TimeoutError if the server goes quiet."""
        counted = None
        quiet_since = time.monotonic()
        while self._active:
            now = time.monotonic()
            if counted is None and count_at is not None and now >= count_at:
                counted = self.finished
            ready = self.selector.select(1.0)
            if ready:
                quiet_since = now
            elif now - quiet_since > patience:
                raise TimeoutError("the server stopped answering")
            for key, _ in ready:
                key.data()
        return self.finished if counted is None else counted


# ---------------------------------------------------------------------- MsgPack:1


class _MPConn:
    __slots__ = ("callback", "sock", "unpacker")

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.callback: Callable[[Any, Any], None] | None = None


class MsgPackLoad(_Driver):
    def __init__(self, path: str, concurrency: int, answer: Answer = bench_answer) -> None:
        super().__init__(concurrency)
        self.answer = answer
        self._msgid = 0
        self._conns = [_MPConn(path) for _ in range(concurrency)]
        self._free = collections.deque(self._conns)
        for conn in self._conns:
            self.selector.register(conn.sock, selectors.EVENT_READ,
                                   lambda c=conn: self._readable(c))
        self.instance = 0

    def _call(self, method: str, arg: Any, callback: Callable[[Any, Any], None]) -> None:
        conn = self._free.pop()  # LIFO, like ngx_http_lua's keepalive pool
        conn.callback = callback
        self._msgid += 1
        conn.sock.sendall(msgpack.packb([0, self._msgid, method, [arg]]))

    def _readable(self, conn: _MPConn) -> None:
        data = conn.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed a connection")
        conn.unpacker.feed(data)
        for message in conn.unpacker:
            if message[0] == 2:
                continue  # serverPid
            callback, conn.callback = conn.callback, None
            self._free.append(conn)
            assert callback is not None
            callback(message[2], message[3])

    def start_instance(self, name: str, config: dict[str, Any]) -> int:
        result: dict[str, Any] = {}
        self._call("plugin.StartInstance", {"Name": name, "Config": json.dumps(config)},
                   lambda error, value: result.update(value or {"error": error}))
        deadline = time.monotonic() + 10
        while not result:
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not answer StartInstance")
            for key, _ in self.selector.select(1.0):
                key.data()
        self.instance = int(result["Id"])
        return self.instance

    def begin(self) -> None:
        answer = self.answer

        def on_data(error: Any, value: Any) -> None:
            if error:
                return self.done(ok=False)
            data = value.get("Data")
            if data == "ret" or not isinstance(data, dict):
                return self.done()
            method = data["Method"]
            if method in TERMINAL:
                return self.done()
            params = {"EventId": value["EventId"]}
            result = answer(method)
            if result is not None:
                params["Data"] = result
            self._call("plugin.StepMultiMap" if method in MULTIMAP else "plugin.Step", params,
                       on_data)
            return None

        self._call("plugin.HandleEvent", {"InstanceId": self.instance, "EventName": "access"},
                   on_data)


# ---------------------------------------------------------------------- ProtoBuf:1


class _PBConn:
    __slots__ = ("buffer", "method", "sequence", "sock", "state")

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = bytearray()
        self.state = "idle"  # "name", "args", "return"
        self.sequence = 0
        self.method = b""  # the PDK call being read


class ProtoBufLoad(_Driver):
    def __init__(self, path: str, concurrency: int, answer: Answer = bench_answer) -> None:
        from kongish_pdk.protocol.protobuf.messages import pb
        from kongish_pdk.testing.pb_client import service_table, wrap_result

        super().__init__(concurrency)
        self._pb = pb
        self._service = service_table()
        self._wrap = wrap_result
        self.answer = answer
        self._answers: dict[bytes, bytes] = {}  # method name frame -> answer frame
        self._sequence = 1
        self._path = path
        self._conns = [_PBConn(path) for _ in range(concurrency)]
        self._free = collections.deque(self._conns)
        for conn in self._conns:
            self.selector.register(conn.sock, selectors.EVENT_READ,
                                   lambda c=conn: self._readable(c))
        self.instance = 0

    def _next_sequence(self) -> int:
        self._sequence += 1  # Kong's first RpcCall has sequence 2
        return self._sequence

    def _send_call(self, conn: _PBConn, command: str, message: Any) -> None:
        conn.sequence = self._next_sequence()
        call = self._pb.RpcCall(sequence=conn.sequence)
        getattr(call, command).CopyFrom(message)
        payload = call.SerializeToString()
        conn.sock.sendall(_LENGTH.pack(len(payload)) + payload)

    def _frames(self, conn: _PBConn) -> list[bytes]:
        data = conn.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed a connection")
        buffer = conn.buffer
        buffer += data
        out = []
        while len(buffer) >= 4:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < 4 + size:
                break
            out.append(bytes(buffer[4:4 + size]))
            del buffer[:4 + size]
        return out

    def start_instance(self, name: str, config: dict[str, Any]) -> int:
        conn = self._free.pop()
        self.selector.unregister(conn.sock)
        self._send_call(conn, "cmd_start_instance",
                        self._pb.CmdStartInstance(name=name, config=json.dumps(config).encode()))
        frames: list[bytes] = []
        conn.sock.settimeout(10.0)  # a server that never answers fails the bench, not hangs it
        while not frames:
            frames = self._frames(conn)
        conn.sock.settimeout(None)
        self.instance = int(self._pb.RpcReturn.FromString(frames[0]).instance_status.instance_id)
        self.selector.register(conn.sock, selectors.EVENT_READ, lambda: self._readable(conn))
        self._free.append(conn)
        return self.instance

    def begin(self) -> None:
        conn = self._free.pop()  # LIFO; the event keeps it to the end
        conn.state = "name"
        self._send_call(conn, "cmd_handle_event",
                        self._pb.CmdHandleEvent(instance_id=self.instance, event_name="access"))

    def _answer_frame(self, name: bytes) -> bytes:
        frame = self._answers.get(name)
        if frame is None:
            method = name.decode()
            output = self._service[method][2]
            payload = self._wrap(output, self.answer(method))
            frame = self._answers[name] = _LENGTH.pack(len(payload)) + payload
        return frame

    def _readable(self, conn: _PBConn) -> None:
        for frame in self._frames(conn):
            if conn.state == "name":
                if not frame:
                    conn.state = "return"
                    continue
                conn.method = frame
                conn.state = "args"
            elif conn.state == "args":
                if conn.method == b"kong.response.exit":
                    # Kong abandons the connection: open a fresh one for the pool.
                    self._replace(conn)
                    self.done()
                    return
                conn.state = "name"
                conn.sock.sendall(self._answer_frame(conn.method))
            elif conn.state == "return":
                conn.state = "idle"
                self._free.append(conn)
                self.done()

    def _replace(self, conn: _PBConn) -> None:
        self.selector.unregister(conn.sock)
        conn.sock.close()
        fresh = _PBConn(self._path)
        self.selector.register(fresh.sock, selectors.EVENT_READ,
                               lambda: self._readable(fresh))
        self._free.append(fresh)

"""A client that drives a plugin server over MsgPack:1 the way Kong does.

It behaves like one Kong worker's RPC object (kong-protocol.md 2): a pool of Unix-socket
connections where every call takes the least recently used free connection (so one event's
Steps hop between connections), message ids counting from 1, requests written with
lua-MessagePack's encoding quirks, the typed ``Step*`` method per PDK function,
``kong.response.exit``/``error`` never answered, and Config sent as a JSON string carrying
Kong's ``__seq__``/``__plugin_id``/``__key__``/``__ws_id`` keys.

Used by this project's own tests, by ``kongish_pdk.testing`` to run plugin tests over the
real wire, and by the benchmarks (with ``fast=True``, msgpack's C encoder).
"""

from __future__ import annotations

import itertools
import json
import socket
from dataclasses import dataclass
from typing import Any

import msgpack

from kongish_pdk.pdk.table import BY_NAME, TERMINAL
from kongish_pdk.testing import luamsgpack
from kongish_pdk.testing.kong_worker import PDKAnswer, Trace, start_config
from kongish_pdk.testing.pool import PooledClient


class RemoteError(Exception):
    """The server answered a request with an error string."""


class StepError(Exception):
    """Raise from a PDK answer function to send ``plugin.StepError`` (Kong 2.x)."""


@dataclass(kw_only=True)
class EventTrace(Trace):
    """What happened in one event, as Kong saw it."""

    event_id: int


def step_method(pdk_method: str) -> str:
    fn = BY_NAME.get(pdk_method)
    return fn.step if fn is not None else "plugin.Step"


class Connection:
    """One socket; one request at a time, like a Kong cosocket."""

    def __init__(self, path: str, timeout: float, fast: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         unicode_errors="surrogateescape")
        self.fast = fast
        self.notifications: list[list[Any]] = []
        self.keepalive = True  # MsgPack:1 never abandons a completed call's connection

    def send(self, message: list[Any]) -> None:
        if self.fast:
            data = msgpack.packb(message, use_bin_type=True, unicode_errors="surrogateescape")
        else:
            data = luamsgpack.pack(message)
        self.sock.sendall(data)

    def read(self) -> list[Any]:
        """The next message (notifications are recorded and skipped)."""
        while True:
            for message in self.unpacker:
                if isinstance(message, list) and message and message[0] == 2:
                    self.notifications.append(message)
                    continue
                return message  # type: ignore[no-any-return]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the plugin server closed the connection")
            self.unpacker.feed(data)

    def close(self) -> None:
        self.sock.close()


class KongClient(PooledClient[Connection]):
    """A Kong worker's view of one plugin server."""

    def __init__(self, socket_path: str, *, timeout: float = 10.0, fast: bool = False) -> None:
        super().__init__(socket_path, timeout)
        self.fast = fast
        self._ids = itertools.count(1)
        self.server_pids: list[int] = []

    def _open(self) -> Connection:
        return Connection(self.socket_path, self.timeout, self.fast)

    def __enter__(self) -> KongClient:
        return self

    # ------------------------------------------------------------------ RPC

    def call(self, method: str, *params: Any) -> Any:
        """One request/response; raises :class:`RemoteError` for an error answer."""
        msgid = next(self._ids)
        with self.connection() as conn:
            conn.send([0, msgid, method, list(params)])
            reply = conn.read()
            for note in conn.notifications:
                if note[1] == "serverPid":
                    self.server_pids.append(note[2])
            conn.notifications.clear()
        if not (isinstance(reply, list) and len(reply) == 4 and reply[0] == 1):
            raise ConnectionError(f"not a msgpack-rpc response: {reply!r}")
        if reply[1] != msgid:
            raise ConnectionError(f"response id {reply[1]} does not match request {msgid}")
        if reply[2] is not None:
            if not isinstance(reply[2], str):
                raise ConnectionError(f"error must be a string, got {reply[2]!r}")
            raise RemoteError(reply[2])
        return reply[3]

    def start_instance(self, name: str, config: dict[str, Any] | None = None, *,
                       seq: int = 1, plugin_id: str | None = None) -> int:
        """StartInstance with Config as Kong encodes it (a JSON string with its own keys)."""
        full = start_config(name, config, seq=seq, plugin_id=plugin_id)
        result = self.call("plugin.StartInstance", {"Name": name, "Config": json.dumps(full)})
        return int(result["Id"])

    def close_instance(self, instance_id: int) -> Any:
        return self.call("plugin.CloseInstance", instance_id)

    def handle_event(self, instance_id: int, phase: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase})
        return result

    def step(self, event_id: int, value: Any, method: str = "plugin.Step") -> dict[str, Any]:
        params: dict[str, Any] = {"EventId": event_id}
        if value is not None:  # Lua drops nil values: no Data key at all
            params["Data"] = value
        result: dict[str, Any] = self.call(method, params)
        return result

    def run_event(self, instance_id: int, phase: str, pdk: PDKAnswer) -> EventTrace:
        """Drive one event to its end, answering each PDK call with ``pdk(method, args)``."""
        reply = self.handle_event(instance_id, phase)
        trace = EventTrace(event_id=reply["EventId"])
        while True:
            data = reply.get("Data")
            if data == "ret":
                return trace
            if not isinstance(data, dict) or not isinstance(data.get("Method"), str):
                raise ConnectionError(f"event answer is neither 'ret' nor a PDK call: {data!r}")
            method, args = data["Method"], data.get("Args") or []
            trace.calls.append((method, args))
            if method in TERMINAL:  # Kong never answers these
                trace.ended_by, trace.exit_args = method, args
                return trace
            try:
                value, how = pdk(method, args), step_method(method)
            except StepError as exc:
                value, how = str(exc), "plugin.StepError"
            reply = self.step(trace.event_id, value, how)

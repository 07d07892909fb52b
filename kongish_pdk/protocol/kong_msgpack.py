"""Kong's MsgPack:1 protocol on one connection, mapped onto the runtime (sans-IO).

Bytes come in through :meth:`Session.data_received`; replies leave through
``transport.write``. Kong sends one request at a time per connection, but an event's Steps
may arrive on any connection, so nothing here is per-event: events are found by id in the
runtime. Each reply is tied to the request it answers: if Kong gave up on a request and
reused the connection (kong-protocol.md 6.23), a late reply is dropped instead of corrupting
the next exchange.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from kongish_pdk.errors import RPCError
from kongish_pdk.pdk.table import FUNCTIONS
from kongish_pdk.protocol import msgpack_rpc
from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME, FrameError, Transport
from kongish_pdk.protocol.msgpack_rpc import BadRequest, Request
from kongish_pdk.runtime.outcomes import Outcome, PDKCall
from kongish_pdk.runtime.runtime import Runtime

log = logging.getLogger("kongish_pdk.protocol")

__all__ = ["STEP_METHODS", "MsgPackReply", "Session"]


# Every Step* name Kong may use (the step method depends on the PDK function called): the
# table's ``step`` values, plus plugin.StepPlugin, which no row of the table answers with.
STEP_METHODS: tuple[str, ...] = (*dict.fromkeys(fn.step for fn in FUNCTIONS),
                                 "plugin.StepPlugin")


# A reply to a request older than this first checks that no newer request is waiting unread:
# Kong only reuses a connection for a new call after giving up on the old one (60 s).
STALE_AFTER = 0.5


class MsgPackReply:
    """Answers one request on one connection (see :class:`kongish_pdk.runtime.events.Reply`)."""

    __slots__ = ("msgid", "seq", "session")

    def __init__(self, session: Session, msgid: int, seq: int) -> None:
        self.session = session
        self.msgid = msgid
        self.seq = seq

    @property
    def transport(self) -> Transport:
        """The connection this reply goes out on (workers may route by it)."""
        return self.session.transport

    def result(self, value: Any) -> None:
        self.session.write(self.seq, self.session.encoder.response(self.msgid, None, value))

    def error(self, message: str) -> None:
        self.session.write(self.seq, self.session.encoder.response(self.msgid, message, None))

    def encode_event(self, event_id: int, outcome: Outcome) -> bytes:
        data: Any = (
            {"Method": outcome.method, "Args": outcome.args}
            if isinstance(outcome, PDKCall)
            else "ret"
        )
        return self.session.encoder.response(self.msgid, None,
                                             {"EventId": event_id, "Data": data})

    def send(self, encoded: bytes) -> bool:
        return self.session.write(self.seq, encoded)


class Session:
    """One connection from Kong."""

    settled = True  # every reply Kong owes is a request of its own (see workers.base.Session)

    def __init__(self, runtime: Runtime, transport: Transport,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.runtime = runtime
        self.transport = transport
        self._decoder = msgpack_rpc.Decoder(max_frame)
        self._seq = 0  # number of the latest request on this connection
        self._answered = 0  # number of the latest request that got its reply
        self._received_at = 0.0  # when the latest request arrived
        self._backlog = 0  # requests decoded but not yet dispatched
        self.encoder = msgpack_rpc.Encoder()
        self._greeting: bytes | None = self.encoder.notification("serverPid", os.getpid())
        self._write_lock = runtime.executor.new_lock()
        self._closed = False
        self._methods: dict[str, Callable[[Any, MsgPackReply], None]] = {
            "plugin.StartInstance": self._start_instance,
            "plugin.CloseInstance": self._close_instance,
            "plugin.HandleEvent": self._handle_event,
            "plugin.StepError": self._step_error,
            "plugin.GetStatus": self._get_status,
            "plugin.GetPluginInfo": self._get_plugin_info,
            "plugin.InstanceStatus": self._instance_status,
            **dict.fromkeys(STEP_METHODS, self._step),
        }

    # ------------------------------------------------------------------ I/O side

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except FrameError as exc:
            log.error("closing a gateway connection: %s", exc)
            self.close()
            return
        for index, message in enumerate(messages):
            with self._write_lock:
                self._seq += 1
                self._received_at = time.monotonic()
                # Dispatching may run a handler inline before the rest are dispatched.
                self._backlog = len(messages) - 1 - index
                reply = MsgPackReply(self, message.msgid, self._seq)
            if isinstance(message, BadRequest):
                reply.error(f"bad request: {message.reason}")
            else:
                self._dispatch(message, reply)

    def connection_lost(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True
        self.transport.close()

    def write(self, seq: int, data: bytes) -> bool:
        """Send a reply unless the connection has moved on to a later request or closed."""
        with self._write_lock:
            if self._closed or seq != self._seq or seq == self._answered:
                return False
            if (time.monotonic() - self._received_at > STALE_AFTER
                    and (self._backlog or self.transport.pending_input())):
                return False  # a newer request is queued: this one was abandoned
            self._answered = seq
            if self._greeting is not None:
                # Kong reads notifications that come before a response; send ours once.
                data, self._greeting = self._greeting + data, None
            ok = self.transport.write(data)
        if not ok:
            self._closed = True
        return ok

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: Request, reply: MsgPackReply) -> None:
        handler = self._methods.get(request.method)
        if handler is None:
            namespace, _, _ = request.method.partition(".")
            if namespace != "plugin":
                reply.error(f"RPC for {namespace} is not supported")
            else:
                reply.error(f"unknown method {request.method!r}")
            return
        params = request.params
        try:
            handler(params[0] if params else None, reply)
        except RPCError as exc:
            reply.error(str(exc))

    def _start_instance(self, arg: Any, reply: MsgPackReply) -> None:
        arg = _mapping(arg, "StartInstance")
        self.runtime.start_instance(arg.get("Name"), arg.get("Config"), reply)

    def _close_instance(self, arg: Any, reply: MsgPackReply) -> None:
        if isinstance(arg, dict):  # Kong sends a bare id; tolerate {"InstanceId": id}
            arg = arg.get("InstanceId")
        self.runtime.close_instance(arg, reply)

    def _handle_event(self, arg: Any, reply: MsgPackReply) -> None:
        arg = _mapping(arg, "HandleEvent")
        self.runtime.handle_event(arg.get("InstanceId"), arg.get("EventName"), reply)

    def _step(self, arg: Any, reply: MsgPackReply) -> None:
        arg = _mapping(arg, "Step")
        self.runtime.step(arg.get("EventId"), arg.get("Data"), None, reply)

    def _step_error(self, arg: Any, reply: MsgPackReply) -> None:
        arg = _mapping(arg, "StepError")
        error = arg.get("Data")
        self.runtime.step(arg.get("EventId"), None, str(error or "unknown PDK error"), reply)

    def _get_status(self, arg: Any, reply: MsgPackReply) -> None:
        reply.result(self.runtime.status())

    def _get_plugin_info(self, arg: Any, reply: MsgPackReply) -> None:
        reply.result(self.runtime.plugin_info(arg))

    def _instance_status(self, arg: Any, reply: MsgPackReply) -> None:
        reply.result(self.runtime.instance_status(arg))


def _mapping(arg: Any, what: str) -> dict[Any, Any]:
    if arg == []:  # lua-MessagePack packs an empty table as an array
        return {}
    if not isinstance(arg, dict):
        raise RPCError(f"bad request: {what} expects a map as its argument, got "
                       f"{type(arg).__name__}")
    return arg

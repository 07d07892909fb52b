"""Kong's ProtoBuf:1 protocol on one connection, mapped onto the runtime (sans-IO).

Bytes come in through :meth:`Session.data_received`; replies leave through
``transport.write``. Unlike MsgPack:1, a whole event runs on the connection that carried its
HandleEvent, in lockstep (kong-protocol.md 3.3):

    K: RpcCall{seq, cmd_handle_event}
    S: "kong.request.get_header"  S: String{"host"}      (a PDK call: name frame, args frame)
    K: String{"localhost"}                                 (its answer: one frame)
    ...
    S: ""  S: RpcReturn{seq}                               (end of event)

so the session itself knows which PDK call an answer belongs to and which event it resumes.
There is no error field: an RPC error is signalled by closing the connection, which Kong
reads as ``closed`` and, for HandleEvent, answers with a reset of the plugin's instances and
a retry (the "no plugin instance" path). ``kong.response.exit`` is never answered.

Kong answers a call whose RPC returns ``Empty`` (``set_header``, the ``kong.log`` calls, ...)
with an empty frame, an acknowledgement that carries nothing, so such a call does not wait
for it: its frames are queued and leave with the next frames that need an answer (or the
event's end), and the acknowledgements owed are read, in order, before that answer. A plugin
that reads a header, sets two and returns costs two writes and two waits, not four. Kong
still runs the calls in order and stops at one that fails, as before; the plugin learns of
that failure at its next call that needs an answer instead of at the failed one.

Because an event never leaves its connection, the threads worker's "connections follow
their events" (``server/connections.py``: the handler's thread reads the connection its
request came on) serves every PDK answer of a ProtoBuf:1 event on the handler's own thread.
``_Reply.transport`` is what lets the worker match the reply to its connection, and
``_Reply.round_trip`` (``runtime.events.DirectReply``) lets that thread send a PDK call and
read its answer in place, without routing it through the runtime as a Step.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from kongish_pdk.errors import EventStopped, RPCError
from kongish_pdk.protocol.framing import DEFAULT_MAX_FRAME, FrameError, Transport
from kongish_pdk.protocol.protobuf import calls
from kongish_pdk.protocol.protobuf.codec import EMPTY_FRAME, FrameDecoder, frame
from kongish_pdk.protocol.protobuf.messages import pb, serialize
from kongish_pdk.runtime.events import Answer, Receive
from kongish_pdk.runtime.outcomes import Outcome, PDKCall
from kongish_pdk.runtime.runtime import Runtime, no_step_for

log = logging.getLogger("kongish_pdk.protocol")

__all__ = ["Session"]

# Calls whose acknowledgements Kong may owe at once. Kong writes each as a frame of its own
# that we do not read until the next answer; bounded so they never fill the socket (and stop
# Kong writing, and so reading) before the server reads them.
MAX_UNACKNOWLEDGED = 32
MAX_QUEUED_BYTES = 64 * 1024  # queued frames beyond this leave at once (still unawaited)
NOTHING: Answer = (None, None)  # what an acknowledgement answers


class _Pending(NamedTuple):
    """A PDK call that waits for Kong's answer, and the event it belongs to."""

    call: calls.PBCall
    event_id: int


class _Encoded(NamedTuple):
    """An event answer ready to send: bytes, and the PDK call that waits for Kong's answer."""

    data: bytes
    pending: _Pending | None  # None: the event ends with this write (return or terminal call)


class _Reply:
    """Answers one RpcCall (see :class:`kongish_pdk.runtime.events.Reply`)."""

    __slots__ = ("build", "command", "sequence", "session", "token")

    def __init__(self, session: Session, token: int, sequence: int, command: str,
                 build: Any = None) -> None:
        self.session = session
        self.token = token  # which RpcCall of this connection it answers
        self.sequence = sequence
        self.command = command
        self.build = build  # result value -> RpcReturn (fills the oneof)

    @property
    def transport(self) -> Transport:
        """The connection this answer goes out on (the one the whole event runs on)."""
        return self.session.transport

    def result(self, value: Any) -> None:
        message = pb.RpcReturn(sequence=self.sequence)
        if self.build is not None:
            self.build(message, value)
        self.session._write_return(self, frame(serialize(message)))

    def error(self, message: str) -> None:
        self.session._refuse(self, message)

    def encode_event(self, event_id: int, outcome: Outcome) -> _Encoded:
        if isinstance(outcome, PDKCall):
            call, data = _encode_call(outcome.method, outcome.args)
            return _Encoded(data, None if outcome.terminal else _Pending(call, event_id))
        # Returned (or the runtime's "ret" for a failure): end of event, then the RpcReturn.
        end = serialize(pb.RpcReturn(sequence=self.sequence))
        return _Encoded(EMPTY_FRAME + frame(end), None)

    def send(self, encoded: _Encoded) -> bool:
        return self.session._send_event(self, encoded)

    def round_trip(self, event_id: int, method: str, args: list[Any], receive: Receive,
                   timeout: float) -> Answer:
        return self.session._round_trip(self, event_id, method, args, receive, timeout=timeout)


class Session:
    """One connection from Kong."""

    def __init__(self, runtime: Runtime, transport: Transport,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.runtime = runtime
        self.transport = transport
        self._decoder = FrameDecoder(max_frame)
        self._lock = runtime.executor.new_lock()
        self._token = 0  # number of the latest RpcCall on this connection
        self._event: _Reply | None = None  # the HandleEvent running on this connection
        self._pending: _Pending | None = None  # the PDK call waiting for Kong's answer
        self._closed = False
        self._queued: list[bytes] = []  # frames of calls that do not wait, not written yet
        self._queued_size = 0
        self._acks_due = 0  # acknowledgements Kong owes, for calls written or queued

    # ------------------------------------------------------------------ I/O side

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self._decoder.feed(data)
        except FrameError as exc:
            self._broken(f"closing a gateway connection: {exc}")
            return
        if self._acks_due:
            payloads = self._drop_acks(payloads)
        for payload in payloads:
            if self._closed:
                return
            if self._pending is not None:
                self._answer(payload)
            elif self._event is not None:
                self._broken("closing a gateway connection: Kong sent a frame while its event "
                             "was not waiting for a PDK answer")
            else:
                self._call(payload)

    @property
    def settled(self) -> bool:
        """No acknowledgement owed by Kong (or none can come any more)."""
        return self._acks_due == 0 or self._closed

    def connection_lost(self) -> None:
        with self._lock:
            self._closed = True
            self._event = None
            pending = self._take_pending()
        if pending is not None:
            # Kong gave up on the event (a PDK call raised in Lua, or the request ended).
            self.runtime.stop_event(pending.event_id, "the gateway closed the connection "
                                                      f"during {pending.call.wire_name}")

    def close(self) -> None:
        """Close cleanly: Kong sees ``closed`` (its signal for errors and restarts)."""
        with self._lock:
            self._closed = True
            self._event = None
            self._queued.clear()
        self.transport.close()

    # ------------------------------------------------------------------ RPC calls

    def _call(self, payload: bytes) -> None:
        try:
            call = pb.RpcCall.FromString(payload)
        except DecodeError as exc:
            self._broken(f"closing a gateway connection: not an RpcCall: {exc}")
            return
        kind = call.WhichOneof("call")
        with self._lock:
            self._token += 1
            token = self._token
        runtime = self.runtime
        if kind == "cmd_handle_event":
            reply = _Reply(self, token, call.sequence, "HandleEvent")
            cmd = call.cmd_handle_event
            with self._lock:
                self._event = reply
            runtime.handle_event(cmd.instance_id, cmd.event_name, reply)
        elif kind == "cmd_start_instance":
            start = call.cmd_start_instance
            reply = _Reply(self, token, call.sequence, "StartInstance", _instance_status)
            runtime.start_instance(start.name, start.config, reply)
        elif kind == "cmd_close_instance":
            reply = _Reply(self, token, call.sequence, "CloseInstance", _instance_status)
            runtime.close_instance(call.cmd_close_instance.instance_id, reply)
        elif kind == "cmd_get_instance_status":
            reply = _Reply(self, token, call.sequence, "GetInstanceStatus", _instance_status)
            self._answer_locally(reply, lambda: runtime.instance_status(
                call.cmd_get_instance_status.instance_id))
        elif kind == "cmd_get_plugin_info":
            reply = _Reply(self, token, call.sequence, "GetPluginInfo", _plugin_info)
            self._answer_locally(reply, lambda: runtime.plugin_info(call.cmd_get_plugin_info.name))
        elif kind == "cmd_get_plugin_names":
            reply = _Reply(self, token, call.sequence, "GetPluginNames", _plugin_names)
            reply.result(sorted(runtime.plugins))
        else:
            self._broken(f"closing a gateway connection: RpcCall #{call.sequence} names no "
                         "command")

    @staticmethod
    def _answer_locally(reply: _Reply, answer: Any) -> None:
        try:
            value = answer()
        except RPCError as exc:
            reply.error(str(exc))
            return
        reply.result(value)

    def _write_return(self, reply: _Reply, data: bytes) -> None:
        with self._lock:
            if self._closed or reply.token != self._token:
                return  # Kong has moved on (or the connection is gone): never send late bytes
            self._write(data)

    def _refuse(self, reply: _Reply, message: str) -> None:
        """An RPC error: ProtoBuf:1 has no error reply, so the connection is closed."""
        with self._lock:
            if self._closed or reply.token != self._token:
                return
        restart = "no plugin instance" in message.lower()
        (log.info if restart else log.error)(
            "%s failed, closing the connection%s: %s", reply.command,
            " (Kong restarts the instance)" if restart else "", message)
        self.close()

    def _broken(self, why: str, pending: _Pending | None = None) -> None:
        """The stream cannot be trusted: close it, and stop an event waiting on it.

        ``pending``: the waiting PDK call when the caller has already taken it; otherwise the
        one still waiting, if any, is taken here.
        """
        log.error("%s", why)
        if pending is None:
            with self._lock:
                pending = self._take_pending()
        self.close()
        if pending is not None:
            self.runtime.stop_event(pending.event_id, why)

    # ------------------------------------------------------------------ events

    def _send_event(self, reply: _Reply, encoded: _Encoded) -> bool:
        pending = encoded.pending
        acknowledged_only = False
        with self._lock:
            if self._closed or reply is not self._event:
                return False
            if pending is None:
                self._event = None  # returned, or a terminal call Kong never answers
                ok = self._flush(encoded.data)
            elif self._may_queue(pending.call):
                ok = acknowledged_only = self._queue(encoded.data)
            else:
                # Before the write: the answer may be read the moment the call is out.
                self._pending = pending
                ok = self._flush(encoded.data)
        if not ok:
            self.connection_lost()
        elif acknowledged_only:
            assert pending is not None
            self.runtime.step(pending.event_id, *NOTHING, reply)  # nothing to wait for
        return ok

    def _round_trip(self, reply: _Reply, event_id: int, method: str, args: list[Any],
                    receive: Receive, *, timeout: float) -> Answer:
        """Send a PDK call (its RPC, and both its frames) and read Kong's answer here: the
        caller reads this connection. A call answered by an acknowledgement only is queued
        and returns at once; the acknowledgements owed come before the next answer read here.

        Anything but exactly one well-formed answer ends the event and the connection (like
        ``_broken``); so does the server stopping the event meanwhile, since Kong's answer
        would then arrive on a connection nobody expects it on. The hot path of a ProtoBuf:1
        event in threads mode, hence written out in one function.
        """
        call, data = _encode_call(method, args)  # raises into the plugin
        with self._lock:
            if self._closed or reply is not self._event:
                raise EventStopped(f"{call.wire_name}: the gateway connection is gone")
            if self._may_queue(call):
                if self._queue(data):
                    return NOTHING
                ok = False
            else:
                ok = self._flush(data)
        why = None if ok else (f"the gateway closed the connection before {call.wire_name} "
                               "could be sent")
        # One deadline for the whole answer, however many pieces it arrives in: a peer that
        # trickles bytes must not keep the event waiting past its timeout.
        deadline, left = time.monotonic() + timeout, timeout
        while why is None:
            try:
                received = receive(left)
            except EventStopped:
                self.close()
                raise
            if received is None:
                why = no_step_for(timeout)
            elif not received:
                why = f"the gateway closed the connection during {call.wire_name}"
            else:
                try:
                    payloads = self._decoder.feed(received)
                except FrameError as exc:
                    why = f"closing a gateway connection: answering {call.wire_name}, {exc}"
                    break
                if self._acks_due:
                    payloads = self._drop_acks(payloads)
                if payloads:
                    if len(payloads) > 1 or self._decoder.pending:
                        why = (f"closing a gateway connection: answering {call.wire_name}, "
                               "Kong sent more than one frame where one was due")
                        break
                    answer, why = _decode(call, payloads[0])
                    if answer is not None:
                        return answer
                left = max(deadline - time.monotonic(), 0.0)
        self.close()
        self.runtime.stop_event(event_id, why)
        raise EventStopped(f"{call.wire_name}: {why}")

    def _answer(self, payload: bytes) -> None:
        """Kong's answer to the pending PDK call: resume the event with it."""
        with self._lock:
            pending, reply = self._take_pending(), self._event
        if pending is None or reply is None:
            return  # closed meanwhile
        answer, why = _decode(pending.call, payload)
        if answer is None:
            self._broken(str(why), pending)
            return
        self.runtime.step(pending.event_id, *answer, reply)

    # ------------------------------------------------------------------ plumbing

    def _may_queue(self, call: calls.PBCall) -> bool:
        """Whether ``call`` can leave without waiting for Kong (hold the lock)."""
        return call.acknowledged_only and self._acks_due < MAX_UNACKNOWLEDGED

    def _queue(self, data: bytes) -> bool:
        """Queue the frames of a call that does not wait for its acknowledgement (hold the
        lock); False if writing them (a large queue leaves at once) found the connection gone."""
        self._queued.append(data)
        self._queued_size += len(data)
        self._acks_due += 1
        if self._queued_size > MAX_QUEUED_BYTES:
            return self._flush(b"")
        return True

    def _flush(self, data: bytes) -> bool:
        """Write the queued frames, then ``data``, in one write; the queue is emptied (hold
        the lock). False if the connection is gone."""
        queued = self._queued
        if queued:
            queued.append(data)
            self._queued, self._queued_size = [], 0
            data = b"".join(queued)
        return self._write(data)

    def _drop_acks(self, payloads: list[bytes]) -> list[bytes]:
        """``payloads`` without the acknowledgements at their start that Kong owed."""
        with self._lock:
            taken = min(self._acks_due, len(payloads))
            self._acks_due -= taken
        return payloads[taken:]

    def _take_pending(self) -> _Pending | None:
        """The event answer waiting for Kong's answer, no longer waiting (hold the lock)."""
        pending, self._pending = self._pending, None
        return pending

    def _write(self, data: bytes) -> bool:
        ok = self.transport.write(data)
        if not ok:
            self._closed = True
        return ok


def _encode_call(method: str, args: list[Any]) -> tuple[calls.PBCall, bytes]:
    """A PDK call's RPC and its two frames (name, input message), ready to send.

    Raises NotCarried/TypeError/ValueError, which reach the plugin's own PDK call.
    """
    call = calls.lookup(method)
    return call, call.name_frame + frame(call.encode(method, args))


def _decode(call: calls.PBCall, payload: bytes) -> tuple[Answer | None, str | None]:
    """Kong's answer as ``call``'s result, or (None, why) if it is not that RPC's output."""
    try:
        return call.decode(payload), None
    except (DecodeError, ValueError, TypeError) as exc:
        return None, (f"closing a gateway connection: Kong's answer to {call.wire_name} is "
                      f"not a {call.output.type_name}: {exc}")


# ---------------------------------------------------------------------- RpcReturn payloads

def _instance_status(message: Any, status: dict[str, Any]) -> None:
    out = message.instance_status
    out.name = status.get("Name", "")
    out.instance_id = status.get("Id", 0)
    out.started_at = int(status.get("StartTime", 0))
    # InstanceStatus.config is stored by Kong and never read; go-pdk leaves it empty too.


def _plugin_info(message: Any, info: dict[str, Any]) -> None:
    out = message.plugin_info
    out.name = info["Name"]
    out.phases.extend(info["Phases"])
    out.version = str(info["Version"])
    out.priority = int(info["Priority"])
    out.schema = json.dumps(info["Schema"], separators=(",", ":"))


def _plugin_names(message: Any, names: list[str]) -> None:
    message.plugin_names.names.extend(names)

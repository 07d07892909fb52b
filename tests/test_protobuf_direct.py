"""ProtoBuf:1 PDK calls answered in place (``DirectReply.round_trip``), bytes in and out.

The executor here does what the threads worker's ``DirectCalls`` does, with a queue standing
in for the connection its handler's thread reads. If a call went the usual way instead (a
Step through the runtime), nothing would ever answer it and the test would fail on a timeout.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

pytest.importorskip("google.protobuf")

from test_protobuf_codec import (
    EMPTY,
    END_RETURN,
    GET_HEADER_ANSWER,
    GET_HEADER_ARGS,
    GET_HEADER_NAME,
    HANDLE_CALL,
    SET_HEADER_ARGS,
    SET_HEADER_NAME,
    START_CALL,
    START_RETURN,
    Recorder,
    set_header,
    spawn,
)

from kongish_pdk.errors import EventStopped
from kongish_pdk.plugin.spec import build_spec
from kongish_pdk.protocol.protobuf import codec
from kongish_pdk.protocol.protobuf.session import Session
from kongish_pdk.runtime.events import Event
from kongish_pdk.runtime.ids import IdCounter
from kongish_pdk.runtime.local import LocalExecutor
from kongish_pdk.runtime.runtime import Runtime, RuntimeOptions
from kongish_pdk.workers.pool import LockSlot

STOP = object()  # put in the wire queue: the server stopped the event meanwhile


class GoHello:
    unwound = threading.Event()

    def __init__(self, config: Any) -> None:
        pass

    def access(self, kong: Any) -> None:
        try:
            kong.request.get_header("host")
            kong.response.set_header("x-hello-from-go", "Go says hi")
        except EventStopped:
            GoHello.unwound.set()
            raise


class DirectExecutor(LocalExecutor):
    """Every call made in place; ``wire`` holds what the connection delivers, in order."""

    def __init__(self) -> None:
        super().__init__(spawn, LockSlot, False)
        self.wire: queue.Queue[Any] = queue.Queue()
        self.timeouts: list[float] = []
        self.done = threading.Event()  # the handler ran and the runtime took its outcome

    def _launch(self, event: Event, run: Any) -> None:
        round_trip = event.round_trip
        assert round_trip is not None, "a ProtoBuf:1 reply offers round trips"
        event.handle.direct = lambda name, args: round_trip(name, args, self.receive)

        def run_then_done() -> None:
            try:
                run()  # reports the outcome to the runtime before it returns
            finally:
                self.done.set()

        super()._launch(event, run_then_done)

    def receive(self, timeout: float) -> bytes | None:
        self.timeouts.append(timeout)
        data = self.wire.get(timeout=10)
        if data is STOP:
            raise EventStopped("the server is stopping")
        return data


class TwoReads:
    def __init__(self, config: Any) -> None:
        pass

    def access(self, kong: Any) -> None:
        kong.request.get_header("host")
        kong.request.get_header("host")


class SetsThenReads:
    def __init__(self, config: Any) -> None:
        pass

    def access(self, kong: Any) -> None:
        kong.response.set_header("a", "1")
        kong.response.set_header("b", "2")
        kong.request.get_header("host")


@pytest.fixture
def plugin() -> type:
    return GoHello


@pytest.fixture
def direct(plugin: type):
    GoHello.unwound.clear()
    clock = [1000.0]
    spec = build_spec("go-hello", cls=plugin, version="0.1", priority=1, schema=None,
                      source="test")
    executor = DirectExecutor()
    runtime = Runtime([spec], executor, RuntimeOptions(event_timeout=5),
                      clock=lambda: clock[0])
    runtime._instance_ids = IdCounter(1)  # the id of reference 7.3
    transport = Recorder()
    session = Session(runtime, transport)
    session.data_received(START_CALL)
    transport.wait_for(len(START_RETURN))
    session.data_received(HANDLE_CALL)
    first = (set_header("a", "1") + set_header("b", "2") if plugin is SetsThenReads else b"")
    first += GET_HEADER_NAME + GET_HEADER_ARGS
    assert transport.wait_for(len(first)) == first
    return executor, transport, runtime, clock, session


def test_the_event_of_reference_7_3_byte_for_byte_answered_in_place(direct) -> None:
    executor, transport, runtime, _, session = direct
    executor.wire.put(GET_HEADER_ANSWER[:5])  # an answer may arrive in pieces
    executor.wire.put(GET_HEADER_ANSWER[5:])
    # set_header's acknowledgement is not waited for: the end follows in the same write.
    sent = SET_HEADER_NAME + SET_HEADER_ARGS + EMPTY + END_RETURN
    assert transport.wait_for(len(sent)) == sent
    assert executor.done.wait(10)
    assert runtime.in_flight() == 0 and not transport.closed and not session.settled
    session.data_received(EMPTY)  # the acknowledgement, read after the event
    assert session.settled
    assert executor.timeouts[0] == 5  # each wait is bounded by --event-timeout


@pytest.mark.parametrize("plugin", [SetsThenReads])
@pytest.mark.parametrize("pieces", [[EMPTY + EMPTY + GET_HEADER_ANSWER],
                                    [EMPTY, EMPTY[:2], EMPTY[2:] + GET_HEADER_ANSWER[:3],
                                     GET_HEADER_ANSWER[3:]]])
def test_acknowledgements_owed_are_read_before_the_answer_in_place(
        direct, pieces: list[bytes]) -> None:
    executor, transport, runtime, _, session = direct
    for piece in pieces:
        executor.wire.put(piece)
    assert transport.wait_for(len(EMPTY + END_RETURN)) == EMPTY + END_RETURN
    assert executor.done.wait(10)
    assert runtime.in_flight() == 0 and not transport.closed and session.settled


def test_an_answer_in_pieces_waits_for_what_is_left_of_one_timeout(direct) -> None:
    executor, transport, _, _, _ = direct
    for piece in (GET_HEADER_ANSWER[:2], GET_HEADER_ANSWER[2:4], GET_HEADER_ANSWER[4:]):
        executor.wire.put(piece)
    transport.wait_for(len(SET_HEADER_NAME + SET_HEADER_ARGS))
    first, second, third = executor.timeouts[:3]
    assert first == 5 and third < second < first  # not 5 s again for each piece


@pytest.mark.parametrize("plugin", [TwoReads])
def test_the_reaper_leaves_a_call_waiting_in_place_to_its_own_timeout(direct) -> None:
    executor, transport, runtime, clock, _ = direct
    clock[0] += 60  # far past the event's deadline
    runtime.tick()
    assert runtime.in_flight() == 1
    executor.wire.put(GET_HEADER_ANSWER)
    transport.wait_for(len(GET_HEADER_NAME + GET_HEADER_ARGS))
    clock[0] += 4  # the deadline was renewed when the answer came
    runtime.tick()
    assert runtime.in_flight() == 1
    executor.wire.put(GET_HEADER_ANSWER)
    assert transport.wait_for(len(EMPTY + END_RETURN)) == EMPTY + END_RETURN


@pytest.mark.parametrize(("delivered", "logged"), [
    (b"", "the gateway closed the connection during kong.request.get_header"),
    (None, "no Step arrived for 5s (orphaned by the gateway)"),
    (GET_HEADER_ANSWER + EMPTY, "Kong sent more than one frame"),
    (codec.frame(b"\x0a\x20short"), "is not a kong_plugin_protocol.String"),
    (b"\xff\xff\xff\x7f", "larger than the"),
    (STOP, "the server is stopping"),
])
def test_no_answer_or_a_broken_one_ends_the_event_and_the_connection(
        direct, caplog: pytest.LogCaptureFixture, delivered: Any, logged: str) -> None:
    executor, transport, runtime, _, _ = direct
    executor.wire.put(delivered)
    assert GoHello.unwound.wait(10)
    assert executor.done.wait(10)  # the handler's end reached the runtime
    assert transport.closed  # the lockstep is lost: Kong must not reuse this connection
    assert transport.data == b""  # and nothing more was written to it
    assert runtime.in_flight() == 0
    if delivered is not STOP:  # the server's own stop is logged by whoever stopped it
        assert logged in caplog.text


@pytest.mark.parametrize("plugin", [SetsThenReads])
def test_kong_closing_while_it_owes_acknowledgements_ends_the_event(
        direct, caplog: pytest.LogCaptureFixture) -> None:
    executor, transport, runtime, _, session = direct
    executor.wire.put(EMPTY)  # one of the two acknowledgements, then the end
    executor.wire.put(b"")
    assert executor.done.wait(10)
    assert transport.closed and transport.data == b"" and runtime.in_flight() == 0
    assert session.settled  # nothing more can come
    assert "the gateway closed the connection during kong.request.get_header" in caplog.text

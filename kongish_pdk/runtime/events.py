"""Events (one phase handler call) and the two interfaces around them.

``Reply`` is how the runtime answers the front door that delivered a request; ``Executor`` is
how it runs handlers (in a thread, a greenlet, or another process). The runtime only talks to
these two, which is what keeps it free of sockets, codecs and concurrency modes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from kongish_pdk.runtime.instances import Instance
from kongish_pdk.runtime.outcomes import Outcome

RUNNING = 0  # the handler is executing (or about to receive a Step's value)
WAITING = 1  # the handler is blocked in a PDK call, waiting for the gateway's Step
FINISHED = 2  # answered for the last time; the event is out of the table


class Event:
    """One HandleEvent: a plugin instance running one phase."""

    __slots__ = ("deadline", "handle", "id", "instance", "phase", "reply", "round_trip", "state")

    def __init__(self, event_id: int, instance: Instance, phase: str, reply: Reply,
                 deadline: float) -> None:
        self.id = event_id
        self.instance = instance
        self.phase = phase
        self.reply: Reply | None = reply  # who gets the handler's next outcome
        self.state = RUNNING
        self.deadline = deadline  # monotonic time after which the reaper steps in
        self.handle: Any = None  # the executor's own per-event data
        # Set by the runtime when the reply can answer PDK calls in place (DirectReply).
        self.round_trip: RoundTrip | None = None

    def describe(self) -> str:
        return (f"plugin {self.instance.spec.name!r} phase {self.phase!r} "
                f"instance #{self.instance.id} event #{self.id}")


class Reply(Protocol):
    """Answers one request. Event answers are encoded first, so a value the protocol cannot
    carry raises in the plugin's PDK call before any state changes."""

    def result(self, value: Any) -> None: ...

    def error(self, message: str) -> None: ...

    def encode_event(self, event_id: int, outcome: Outcome) -> Any:
        """Serialise an event answer; raise TypeError/ValueError if it cannot be carried."""
        ...

    def send(self, encoded: Any) -> bool:
        """Write an encoded answer; False if the request is gone (connection closed or reused)."""
        ...


Deliver = Callable[[Event, Outcome], None]

# Waits up to ``timeout`` seconds for the next bytes of the connection the calling thread
# reads: b"" at its end, None if none came in time. Raises EventStopped if the server stopped
# the event meanwhile.
Receive = Callable[[float], bytes | None]

# (value, error) of one PDK call; an error string makes the plugin's call raise PDKError.
Answer = tuple[Any, str | None]

# A PDK call made and answered on the spot: (method, args, receive) -> answer.
RoundTrip = Callable[[str, list[Any], Receive], Answer]


class DirectReply(Reply, Protocol):
    """A Reply whose event stays on one connection in lockstep (ProtoBuf:1).

    The handler's own thread, if it is the one reading that connection, can then send a PDK
    call and read its answer right there: no Step routed through the runtime, no hand-off.
    The runtime offers this to the executor as ``Event.round_trip``; an executor that cannot
    read the connection from the handler's thread simply never uses it.
    """

    def round_trip(self, event_id: int, method: str, args: list[Any], receive: Receive,
                   timeout: float) -> Answer:
        """Send the call, read its answer with ``receive``. Raises what ``encode_event``
        raises; raises EventStopped (having stopped the event) if no answer can come."""
        ...


class Executor(Protocol):
    """Runs plugin code. Implemented by each worker class (threads, gevent, processes)."""

    def bind(self, deliver: Deliver) -> None:
        """Where handler outcomes go (the runtime's ``deliver``)."""
        ...

    def new_lock(self) -> AbstractContextManager[Any]:
        """A mutex suited to this worker (the runtime and sessions guard short sections)."""
        ...

    def run_blocking(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` away from the I/O path (it may call plugin code that blocks)."""
        ...

    def construct(self, instance: Instance) -> None:
        """Create the Plugin object for ``instance``; blocking; raises what __init__ raised."""
        ...

    def destroy(self, instance: Instance) -> None:
        """Call ``Plugin.close()`` if it has one; blocking; never raises."""
        ...

    def start(self, event: Event) -> None:
        """Start the handler of ``event``; outcomes arrive through ``deliver``."""
        ...

    def resume(self, event: Event, value: Any, error: str | None) -> None:
        """Hand a PDK call's answer (or the gateway's error text) to the waiting handler."""
        ...

    def abort(self, event: Event, waiting: bool) -> None:
        """Stop the handler at its next PDK call (now, if ``waiting`` for a Step)."""
        ...

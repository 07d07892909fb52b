"""Running one phase handler: the PDK backend that suspends it, and the runner around it.

``EventChannel`` is the PDK backend for gateways that answer each call with a later Step
(Kong's MsgPack:1): a call is handed out through ``emit`` and the handler waits on a
``Slot`` until the executor puts the answer there. The slot type is the only thing that
differs between threads and greenlets. An executor may also give the channel a ``direct``
way to make a call and read its answer in place (ProtoBuf:1, see ``events.DirectReply``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, Protocol

from kongish_pdk.errors import EventStopped, PDKError
from kongish_pdk.pdk.bridge import PDK
from kongish_pdk.pdk.surface import Kong
from kongish_pdk.pdk.table import TERMINAL
from kongish_pdk.runtime.events import Answer
from kongish_pdk.runtime.outcomes import RETURNED, Failed, Outcome, PDKCall


class Slot(Protocol):
    """A one-value hand-off: ``take`` blocks until ``put``; one put per take."""

    def put(self, value: Any) -> None: ...

    def take(self) -> Any: ...


STOP = object()  # put in a slot instead of an answer: the handler must unwind


class EventChannel:
    """PDK backend of one event whose answers come back asynchronously."""

    __slots__ = ("direct", "emit", "slot", "stop_reason", "stopped")

    def __init__(self, emit: Callable[[Outcome], None], slot: Slot) -> None:
        self.emit = emit
        self.slot = slot
        self.stopped = False
        self.stop_reason = "the event is over"
        # (name, args) -> (value, error) answered in place, or None: not here, use emit/slot.
        self.direct: Callable[[str, list[Any]], Answer | None] | None = None

    def call(self, name: str, args: list[Any]) -> Any:
        if self.stopped:
            raise EventStopped(f"{name}: {self.stop_reason}")
        if name in TERMINAL:
            # Kong never answers exit/error: finish the event now; later calls unwind.
            self.stopped = True
            self.stop_reason = f"the response was already sent by {name}"
            try:
                self.emit(PDKCall(name, args, terminal=True))
            except BaseException:
                self.stopped = False
                raise
            return None
        direct = self.direct
        answer = None if direct is None else direct(name, args)
        if answer is None:
            self.emit(PDKCall(name, args))
            answer = self.slot.take()
        value, error = answer
        if value is STOP:
            self.stopped = True
            self.stop_reason = str(error)
            raise EventStopped(f"{name}: {error}")
        if error is not None:
            raise PDKError(f"{name}: {error}")
        return value

    def stop(self, reason: str, waiting: bool) -> None:
        """Make the handler unwind: now if it waits for an answer, else at its next call."""
        self.stop_reason = reason
        self.stopped = True
        if waiting:
            self.slot.put((STOP, reason))


def failure(exc: BaseException) -> Failed:
    return Failed(f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))


def run_handler(method: Callable[[Kong], Any], backend: Any, emit: Callable[[Outcome], None],
                lua_style: bool) -> None:
    """Call one phase method and report how it ended. Never raises."""
    try:
        method(Kong(PDK(backend, lua_style)))
    except EventStopped:
        # The event already ended for the gateway; still say the handler is gone, so an
        # executor that tracks handlers (the processes mode) can forget it.
        emit(RETURNED)
    except BaseException as exc:
        emit(failure(exc))
    else:
        emit(RETURNED)

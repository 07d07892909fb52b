"""The plugin runtime: the operations every front door maps its protocol onto.

It owns the plugin registry, the instance table and the event table, and decides what the
gateway is told: a PDK call, "ret", or (when a plugin fails) what ``--on-plugin-error`` says.
It knows nothing about sockets, codecs or concurrency: requests come with a :class:`Reply`,
and plugin code runs through an :class:`Executor`. One short lock guards the tables; no lock
is ever held while plugin code runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from kongish_pdk.errors import EventStopped, NoPluginInstance, RPCError
from kongish_pdk.plugin.spec import PluginSpec
from kongish_pdk.runtime.events import (
    FINISHED,
    RUNNING,
    WAITING,
    Answer,
    Event,
    Executor,
    Receive,
    Reply,
)
from kongish_pdk.runtime.ids import IdCounter
from kongish_pdk.runtime.instances import Instance, InstanceTable, decode_config, new_instance
from kongish_pdk.runtime.outcomes import RETURNED, Failed, Outcome, PDKCall

log = logging.getLogger("kongish_pdk.runtime")

FAIL_CLOSED = "fail-closed"
PASS = "pass"
_NEVER = float("inf")


def no_step_for(timeout: float) -> str:
    """Why an event waiting for the gateway's answer was stopped (logged, and in tests)."""
    return f"no Step arrived for {timeout:g}s (orphaned by the gateway)"

# Where Kong lets a plugin end the request, and the call that does it (kong-protocol.md 4.4).
FAIL_CLOSED_CALLS = {
    "rewrite": PDKCall("kong.response.error", [500], terminal=True),
    "access": PDKCall("kong.response.error", [500], terminal=True),
    "response": PDKCall("kong.response.error", [500], terminal=True),
    "preread": PDKCall("kong.response.exit", [500], terminal=True),
}


@dataclass(frozen=True)
class RuntimeOptions:
    on_plugin_error: str = FAIL_CLOSED
    event_timeout: float = 60.0  # no Step (orphan) or no outcome (slow handler) for this long
    instance_idle_timeout: float = 60.0  # 0 = never expire


class Runtime:
    def __init__(
        self,
        plugins: Sequence[PluginSpec],
        executor: Executor,
        options: RuntimeOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plugins = {spec.name: spec for spec in plugins}
        self.options = options or RuntimeOptions()
        self.executor = executor
        self._clock = clock
        self._lock = executor.new_lock()
        self._instances = InstanceTable()
        self._events: dict[int, Event] = {}
        self._instance_ids = IdCounter()
        self._event_ids = IdCounter()
        self._loaded_at = time.time()
        self._last_start: dict[str, float] = {}
        self._last_close: dict[str, float] = {}
        executor.bind(self.deliver)

    # ----------------------------------------------------------------- information RPCs

    def plugin_info(self, name: str) -> dict[str, Any]:
        return self._spec(name).info()

    def status(self) -> dict[str, Any]:
        with self._lock:
            plugins = {
                name: {
                    "Name": name,
                    "Modtime": spec.modtime,
                    "LoadTime": self._loaded_at,
                    "Instances": [i.status() for i in self._instances.of_plugin(name)],
                    "LastStartInstance": self._last_start.get(name, 0),
                    "LastCloseInstance": self._last_close.get(name, 0),
                }
                for name, spec in self.plugins.items()
            }
        # "Events" (in flight) is ours; Kong reads nothing from GetStatus.
        return {"Pid": os.getpid(), "Plugins": plugins, "Events": len(self._events)}

    def instance_status(self, instance_id: Any) -> dict[str, Any]:
        with self._lock:
            instance = self._instances.get(instance_id)
        if instance is None:
            raise NoPluginInstance(instance_id)
        return instance.status()

    def in_flight(self) -> int:
        return len(self._events)

    # ----------------------------------------------------------------- instance lifecycle

    def start_instance(self, name: Any, raw_config: Any, reply: Reply) -> None:
        try:
            spec = self._spec(name)
        except RPCError as exc:
            reply.error(str(exc))
            return
        instance_id = self._instance_ids.next()
        try:
            config = decode_config(spec.name, raw_config)
            instance = new_instance(spec, instance_id, config, self._clock)
        except (RPCError, ValueError, TypeError) as exc:
            log.error("StartInstance %s refused: %s", spec.name, exc)
            reply.error(str(exc))
            return
        self.executor.run_blocking(lambda: self._construct(instance, reply))

    def _construct(self, instance: Instance, reply: Reply) -> None:
        name = instance.spec.name
        try:
            self.executor.construct(instance)
        except Exception as exc:
            log.error("plugin %r failed to start (instance #%d): %s: %s", name, instance.id,
                      type(exc).__name__, exc, exc_info=exc)
            reply.error(f"plugin {name!r} failed to start: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._instances.add(instance)
            self._last_start[name] = instance.started_at
        log.info("started instance #%d of plugin %r", instance.id, name)
        reply.result(instance.status())

    def close_instance(self, instance_id: Any, reply: Reply) -> None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is not None:
                self._retire_locked(instance)
                self._last_close[instance.spec.name] = time.time()
                destroy_now = instance.active == 0
        if instance is None:
            reply.error(str(NoPluginInstance(instance_id)))
            return
        if destroy_now:
            self._destroy(instance, "CloseInstance")
        reply.result(instance.status(with_start_time=False))

    def _retire_locked(self, instance: Instance) -> None:
        """Take the instance out of the table and mark it closing: no new event reaches it,
        and it is destroyed once idle (hold the lock)."""
        self._instances.remove(instance.id)
        instance.closing = True

    def _destroy(self, instance: Instance, why: str) -> None:
        """Call the plugin's close() off the I/O path, then say so in the log."""

        def destroy() -> None:
            self.executor.destroy(instance)
            log.info("closed instance #%d of plugin %r (%s)", instance.id, instance.spec.name,
                     why)

        self.executor.run_blocking(destroy)

    # ----------------------------------------------------------------- events

    def handle_event(self, instance_id: Any, phase: Any, reply: Reply) -> None:
        now = self._clock()
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is not None and phase in instance.spec.phases:
                event = Event(self._event_ids.next(), instance, phase, reply,
                              now + self.options.event_timeout)
                self._events[event.id] = event
                direct = getattr(reply, "round_trip", None)  # a DirectReply's
                if direct is not None:
                    event.round_trip = partial(self._round_trip, event, direct)
                instance.active += 1
                instance.last_used = now
        if instance is None:
            reply.error(str(NoPluginInstance(instance_id)))
            return
        if phase not in instance.spec.phases:
            reply.error(f"plugin {instance.spec.name!r} has no {phase!r} phase "
                        f"(it implements: {', '.join(instance.spec.phases)})")
            return
        self.executor.start(event)

    def step(self, event_id: Any, value: Any, error: str | None, reply: Reply) -> None:
        with self._lock:
            event = self._events.get(event_id) if isinstance(event_id, int) else None
            if event is not None and event.state == WAITING:
                event.state = RUNNING
                event.reply = reply
                event.deadline = self._clock() + self.options.event_timeout
                waiting = True
            else:
                waiting = False
        if event is None or not waiting:
            reason = "is not waiting for a Step" if event else "is unknown (finished or expired)"
            reply.error(f"event {event_id!r} {reason}")
            return
        self.executor.resume(event, value, error)

    def _round_trip(self, event: Event, direct: Callable[..., Answer], method: str,
                    args: list[Any], receive: Receive) -> Answer:
        """A PDK call answered in place (``direct``: the reply's ``DirectReply.round_trip``);
        the event stays RUNNING.

        While it waits, the reaper leaves it alone: the wait has its own ``event_timeout``,
        and the deadline is renewed when it ends (unlocked float stores: ``tick`` reads them
        under the lock, and a stale read only delays or hastens one check).
        """
        if event.reply is None:
            raise EventStopped(f"{method}: the event is over")
        timeout = self.options.event_timeout
        event.deadline = _NEVER
        try:
            return direct(event.id, method, args, receive, timeout)
        finally:
            event.deadline = self._clock() + timeout

    def deliver(self, event: Event, outcome: Outcome) -> None:
        """Called by the executor when a handler produced an outcome (on the handler's side)."""
        if isinstance(outcome, Failed):
            self._log_failure(event, outcome)
            outcome = self._failure_answer(event)
        reply = event.reply
        waits = isinstance(outcome, PDKCall) and not outcome.terminal
        if event.state == FINISHED or reply is None:
            self._answered_already(event, waits)
            return
        # Encode before changing state, so an argument the protocol cannot carry raises in
        # the plugin's PDK call and the event stays exactly as it was.
        encoded = reply.encode_event(event.id, outcome)
        closed = None
        with self._lock:
            finished = event.state == FINISHED
            if not finished:
                event.reply = None
                if waits:
                    event.state = WAITING
                    event.deadline = self._clock() + self.options.event_timeout
                else:
                    closed = self._finish_locked(event)
        self._destroy_closed(closed)
        if finished:
            self._answered_already(event, waits)
            return
        if not reply.send(encoded) and waits:
            # Kong will never send the Step for a call it never received.
            self._abort(event, "the gateway abandoned the request (connection closed or reused) "
                               "before the PDK call could be sent")

    def _answered_already(self, event: Event, waits: bool) -> None:
        """The event was stopped (exit, reaped, shutdown) while its handler kept running.

        Nothing more goes to the gateway. A handler about to wait for this call's answer
        passed its "stopped" check before the stop, so no STOP reached it: send one now, or
        it would wait forever.
        """
        if waits:
            self.executor.abort(event, True)

    def _finish_locked(self, event: Event) -> Instance | None:
        """Take the event out; returns its instance if that must now be destroyed (do it
        after releasing the lock: close() is plugin code)."""
        event.state = FINISHED
        del self._events[event.id]
        instance = event.instance
        instance.active -= 1
        return instance if instance.closing and instance.active == 0 else None

    def _destroy_closed(self, instance: Instance | None) -> None:
        if instance is not None:
            self._destroy(instance, "CloseInstance, after its last event")

    # ----------------------------------------------------------------- failures

    def _log_failure(self, event: Event, failed: Failed) -> None:
        policy = self.options.on_plugin_error
        if event.state == FINISHED:
            log.warning("%s raised after its response was sent: %s\n%s", event.describe(),
                        failed.error, failed.traceback)
            return
        action = ("answering 500" if policy == FAIL_CLOSED and event.phase in FAIL_CLOSED_CALLS
                  else "request continues")
        log.error("%s failed (%s): %s\n%s", event.describe(), action, failed.error,
                  failed.traceback)

    def _failure_answer(self, event: Event) -> Outcome:
        if self.options.on_plugin_error == FAIL_CLOSED:
            return FAIL_CLOSED_CALLS.get(event.phase, RETURNED)
        return RETURNED

    def _abort(self, event: Event, why: str) -> None:
        with self._lock:
            if event.state == FINISHED:
                return
            waiting = event.state == WAITING
            reply, event.reply = event.reply, None
            closed = self._finish_locked(event)
        self._destroy_closed(closed)
        log.warning("%s stopped: %s", event.describe(), why)
        self.executor.abort(event, waiting)
        if reply is not None:  # the handler was still running: answer for it
            answer = self._failure_answer(event)
            reply.send(reply.encode_event(event.id, answer))

    # ----------------------------------------------------------------- housekeeping

    def tick(self) -> None:
        """Reap orphaned or overdue events and expire idle instances; call about once a second."""
        now = self._clock()
        with self._lock:
            overdue = [e for e in self._events.values() if e.deadline <= now]
        timeout = self.options.event_timeout
        for event in overdue:
            if event.state == WAITING:
                self._abort(event, no_step_for(timeout))
            else:
                self._abort(event, f"the handler produced nothing for {timeout:g}s")
        with self._lock:
            idle = self._instances.idle(now, self.options.instance_idle_timeout)
            for instance in idle:
                self._retire_locked(instance)
        for instance in idle:
            self._destroy(instance, f"idle for {self.options.instance_idle_timeout:g}s")

    def stop_event(self, event_id: int, why: str) -> None:
        """Stop one event its front door knows is over (e.g. Kong closed the connection a
        ProtoBuf:1 event was bound to, so its PDK call will never be answered)."""
        with self._lock:
            event = self._events.get(event_id)
        if event is not None:
            self._abort(event, why)

    def abort_all(self, why: str) -> None:
        """Stop every event still in flight (shutdown after the drain period)."""
        with self._lock:
            events = list(self._events.values())
        for event in events:
            self._abort(event, why)

    def _spec(self, name: Any) -> PluginSpec:
        """The plugin served under ``name``; an RPCError naming what is served otherwise."""
        spec = self.plugins.get(name) if isinstance(name, str) else None
        if spec is None:
            raise RPCError(f"plugin {name!r} is not served here (serving: {self._names()})")
        return spec

    def _names(self) -> str:
        return ", ".join(sorted(self.plugins)) or "nothing"

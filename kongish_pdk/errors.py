"""Exceptions shared by every layer, so no layer imports another just for an error type."""

from __future__ import annotations


class KongishError(Exception):
    """Base class for errors raised by kongish-pdk itself."""


class PDKError(KongishError):
    """A PDK call failed on the gateway side (Kong 2.x StepError, or a local PDK refused it)."""


class PDKThreadError(KongishError, RuntimeError):
    """A PDK call from a thread (under gevent, a greenlet) other than the handler's own.

    Kong answers an event's PDK calls one at a time, in the order the handler makes them;
    in threads and gevent modes the server also reads those answers on the handler's own
    thread, so a call from elsewhere could never be answered there. It fails at once, in
    every mode, instead of waiting for the event timeout.
    """


class PluginLoadError(KongishError):
    """A plugin file could not be imported or does not describe a valid Kong plugin."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class RPCError(KongishError):
    """An RPC the gateway sent cannot be served; the text goes back to it as the error.

    The text must never contain "no plugin instance" unless the instance really is unknown:
    Kong restarts instances (and re-runs handlers) when it sees those words.
    """


class NoPluginInstance(RPCError):
    """The instance id is unknown (never started, closed, expired, or from before a restart)."""

    def __init__(self, instance_id: object) -> None:
        super().__init__(f"no plugin instance #{instance_id}")
        self.instance_id = instance_id


class EventStopped(BaseException):
    """Raised inside a plugin handler to unwind it: the event is already over.

    It derives from BaseException so that a plugin's ``except Exception`` does not swallow it.
    Raised when the handler calls the PDK after ``kong.response.exit``/``error``, after the
    event was reaped as an orphan, or when the server shuts down.
    """

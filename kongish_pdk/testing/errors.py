"""What the testing kit raises.

A *violation* is a PDK call real Kong would not serve: a phase Kong forbids, a function that
needs the live request in the log timer, or something the kit cannot imitate. Each is a
:class:`~kongish_pdk.errors.PDKError` so it surfaces inside the plugin where the call was
made, and the kit raises it again from ``run()`` even if the plugin caught it: over the real
socket Kong would never have answered that call at all.
"""

from __future__ import annotations

from kongish_pdk.errors import PDKError


class KitViolation(PDKError):
    """A PDK call that would fail (or hang the event) in real Kong."""


class PhaseError(KitViolation):
    """Kong forbids this function in this phase (Kong's own wording follows the name).

    Over the real socket Kong raises a Lua error and never answers the call, so the event
    waits until the server's ``--event-timeout``; the kit reports it at once instead.
    """


class LogPhaseError(KitViolation):
    """The function reads the live request, which Kong's log timer no longer has."""


class KongLuaError(KitViolation):
    """Kong would raise a Lua error for these arguments (e.g. a header value that is a dict);
    over the socket the call is never answered."""


class NotInKit(KitViolation):
    """The kit does not imitate this function (or it is not in the PDK table)."""


class PluginError(Exception):
    """The plugin raised in a phase; the message carries the error and its traceback.

    In-process ``__cause__`` is the original exception; over the wire the text comes from the
    server's log. The kit also applied what the server does (``kong.response.error(500)``
    in rewrite/access/response), so ``run(..., raise_errors=False)`` shows that response.
    """

    def __init__(self, phase: str, error: str, traceback: str) -> None:
        super().__init__(f"plugin failed in the {phase} phase: {error}\n{traceback}".rstrip())
        self.phase = phase
        self.error = error
        self.traceback = traceback


class ConfigRejected(Exception):
    """The config would not be accepted: Kong's schema refuses it, or the plugin server's
    StartInstance fails (typed config validation, ``Plugin.__init__`` raising)."""

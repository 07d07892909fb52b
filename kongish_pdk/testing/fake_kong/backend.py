"""FakeKong: a PDK backend that answers ``call(name, args)`` the way Kong 3.x answers.

Same phase checks (with Kong's wording), same value shapes *before* the bridge normalises
them (a header is a string, or a list when repeated; an empty table is ``[]`` on the wire),
same soft failures (``None``). In-process it sits behind ``surface.Kong(PDK(...))`` like the
real event channel; over the wire it answers the Steps a real server sends. One
implementation, so both modes see the same gateway.

Every function of the PDK table is either answered by a ``pdk_<name>`` method of one of the
namespace mixins or listed in :data:`NOT_IN_KIT` (a test checks this); anything else raises
:class:`NotInKit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kongish_pdk.errors import EventStopped
from kongish_pdk.pdk.table import BY_NAME, PDKFunction
from kongish_pdk.testing.errors import KitViolation, LogPhaseError, NotInKit, PhaseError
from kongish_pdk.testing.fake_kong.client import ClientMixin
from kongish_pdk.testing.fake_kong.context import ContextMixin
from kongish_pdk.testing.fake_kong.log import LogMixin
from kongish_pdk.testing.fake_kong.node import NodeMixin
from kongish_pdk.testing.fake_kong.request import RequestMixin
from kongish_pdk.testing.fake_kong.response import ResponseMixin
from kongish_pdk.testing.fake_kong.service import ServiceMixin
from kongish_pdk.testing.fake_kong.state import CallRecord, GatewayState

# Functions the kit deliberately does not imitate, and why.
NOT_IN_KIT: dict[str, str] = {
    "kong.service.set_tls_verify_store": "takes a Lua X509 store object, which no external "
                                         "plugin can build",
    "kong.service.set_tls_cert_key": "takes Lua certificate/key objects, which no external "
                                     "plugin can build",
    "kong.vault.update": "rewrites a Lua table in place; use kong.vault.get per reference",
}


class FakeKong(ClientMixin, ContextMixin, LogMixin, NodeMixin, RequestMixin, ResponseMixin,
               ServiceMixin):
    """A PDK backend answering from a :class:`GatewayState` (see the module doc)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.stopped = False
        self.stop_reason = ""

    # ----------------------------------------------------------------- dispatch

    def call(self, name: str, args: list[Any]) -> Any:
        """Answer one PDK call, or raise what Kong (or the runtime) would make of it."""
        if self.stopped:
            raise EventStopped(f"{name}: {self.stop_reason}")
        state = self.state
        state.calls.append(CallRecord(state.phase, name, list(args)))
        try:
            fn = BY_NAME.get(name)
            if fn is None:
                raise NotInKit(f"{name} is not in the PDK table, so the kit cannot imitate it "
                               f"(kong.raw_call reaches it on a real Kong)")
            self._check_phase(fn)
            handler: Callable[[list[Any]], Any] | None = getattr(
                self, "pdk_" + name.removeprefix("kong.").replace(".", "_"), None)
            if handler is None:
                reason = NOT_IN_KIT.get(name, "not imitated")
                raise NotInKit(f"{name}: the testing kit does not imitate it ({reason})")
            value = handler(list(args))
        except KitViolation as exc:
            state.violations.append(exc)
            raise
        if fn.terminal:
            self.stop(f"the response was already sent by {name}")
        return value

    def stop(self, reason: str) -> None:
        self.stopped = True
        self.stop_reason = reason

    def _check_phase(self, fn: PDKFunction) -> None:
        phase = self.state.phase
        if phase not in fn.phases:
            raise PhaseError(f"{fn.name}: function cannot be called in {phase} phase "
                             f"(only in: {', '.join(fn.allowed_phases)})")
        if phase == "log" and fn.log_unavailable:
            raise LogPhaseError(
                f"{fn.name}: not available in the log phase of an external plugin. Kong runs "
                f"it later, in a timer without the request, from a snapshot: use "
                f"kong.log.serialize(), kong.request.get_header(s), "
                f"kong.response.get_status/get_header(s)/get_source, or kong.ctx.shared "
                f"(save what you need there in an earlier phase)")

"""A fake Kong for one request, for the testing kit.

``state`` holds what Kong holds for the request (:class:`GatewayState`) and the records the
kit reports; ``backend`` is :class:`FakeKong`, the PDK backend: dispatch and phase checks,
with one mixin per PDK area (``client``, ``request``, ``response``, ``service``, ``log``,
``context``, ``node``) answering from the state; ``values`` holds Kong's value conventions.
"""

from kongish_pdk.testing.fake_kong.backend import NOT_IN_KIT, FakeKong
from kongish_pdk.testing.fake_kong.state import (
    CallRecord,
    ExitInfo,
    GatewayState,
    LogLine,
    PhaseRun,
)

__all__ = [
    "NOT_IN_KIT",
    "CallRecord",
    "ExitInfo",
    "FakeKong",
    "GatewayState",
    "LogLine",
    "PhaseRun",
]

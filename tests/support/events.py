"""Running one event through a test client and reading what the plugin did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kongish_pdk.testing import KongClient


def set_headers(kong: KongClient, iid: int,
                answer: Callable[[str, Any], Any] = lambda method, args: None,
                phase: str = "access") -> dict[str, str]:
    """Run ``phase`` on instance ``iid``; the headers its handler set (name -> value).

    ``answer`` replies to each PDK call, as in :meth:`KongClient.run_event`.
    """
    trace = kong.run_event(iid, phase, answer)
    return dict(args for method, args in trace.calls if method.endswith("set_header"))

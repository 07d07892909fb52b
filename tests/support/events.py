"""Running one event through a test client and reading what the plugin did."""

from __future__ import annotations

from kongish_pdk.testing import KongClient
from kongish_pdk.testing.kong_worker import PDKAnswer


def set_headers(kong: KongClient, iid: int,
                answer: PDKAnswer = lambda method, args: None,
                phase: str = "access") -> dict[str, str]:
    """Run ``phase`` on instance ``iid``; the headers its handler set (name -> value).

    ``answer`` replies to each PDK call, as in :meth:`KongClient.run_event`.
    """
    trace = kong.run_event(iid, phase, answer)
    return dict(args for method, args in trace.calls if method.endswith("set_header"))

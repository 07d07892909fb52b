"""What a running handler produces for the gateway: a PDK call, a return, or a failure.

Front doors turn these into their protocol's replies; the runtime decides which one to send.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# NamedTuples: one is built for every PDK call, and they are the cheapest immutable records.


class PDKCall(NamedTuple):
    """The handler asks the gateway to run a PDK function and (unless terminal) waits."""

    method: str
    args: list[Any]
    terminal: bool = False  # kong.response.exit / error: the gateway never answers


class Returned(NamedTuple):
    """The handler returned: the event is over (MsgPack:1 answers "ret", ProtoBuf:1 an empty
    frame, then the RpcReturn)."""

    def __bool__(self) -> bool:  # an empty tuple would be falsy
        return True


class Failed(NamedTuple):
    """The handler raised, timed out, or its worker died; ``traceback`` is for the log."""

    error: str  # one line: "ValueError: boom"
    traceback: str = ""


RETURNED = Returned()

Outcome = PDKCall | Returned | Failed

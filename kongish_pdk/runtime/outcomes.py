"""What a running handler produces for the gateway: a PDK call, a return, or a failure.

Front doors turn these into their protocol's replies; the runtime decides which one to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PDKCall:
    """The handler asks the gateway to run a PDK function and (unless terminal) waits."""

    method: str
    args: list[Any]
    terminal: bool = False  # kong.response.exit / error: the gateway never answers


@dataclass(frozen=True, slots=True)
class Returned:
    """The handler returned: the event is over (MsgPack:1 answers "ret")."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler raised, timed out, or its worker died; ``traceback`` is for the log."""

    error: str  # one line: "ValueError: boom"
    traceback: str = ""


RETURNED = Returned()

Outcome = PDKCall | Returned | Failed

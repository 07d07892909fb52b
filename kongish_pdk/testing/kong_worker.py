"""What the MsgPack:1 and ProtoBuf:1 test clients share as one Kong worker.

The StartInstance config Kong builds (the plugin's config plus Kong's ``__plugin_id``,
``__ws_id``, ``__key__`` and ``__seq__`` keys), the signature of the function that answers
PDK calls, and the trace of one event as Kong saw it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The workspace every fake entity (and every StartInstance) belongs to: Kong's default one.
WS_ID = "d5a1f4b2-0000-4000-8000-000000000000"

PDKAnswer = Callable[[str, list[Any]], Any]


def start_config(name: str, config: dict[str, Any] | None = None, *, seq: int = 1,
                 plugin_id: str | None = None) -> dict[str, Any]:
    """The Config object of a StartInstance, as Kong fills it in (before JSON encoding)."""
    full = dict(config or {})
    plugin_id = plugin_id or str(uuid.uuid4())
    full.update({
        "__plugin_id": plugin_id,
        "__ws_id": WS_ID,
        "__key__": f"plugins:{name}::::{plugin_id}",
        "__seq__": seq,
    })
    return full


@dataclass
class Trace:
    """What happened in one event, as Kong saw it."""

    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    ended_by: str = "ret"  # "ret", or the terminal PDK method (kong.response.exit / error)
    exit_args: list[Any] | None = None

    @property
    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

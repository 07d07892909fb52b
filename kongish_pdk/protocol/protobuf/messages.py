"""Kong's message classes, from the generated ``pluginsocket_pb2`` module.

protobuf builds the classes at import time and ships no type stubs for them, so the module
is imported here once, typed as ``Any``, instead of teaching mypy about generated code.
"""

from __future__ import annotations

import importlib
from typing import Any

pb: Any = importlib.import_module("kongish_pdk.protocol.protobuf.pluginsocket_pb2")


def serialize(message: Any) -> bytes:
    """``message.SerializeToString()``, typed."""
    data: bytes = message.SerializeToString()
    return data

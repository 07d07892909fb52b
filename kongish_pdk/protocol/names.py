"""The gateway protocols a server can speak, as the CLI names them and as Kong's dump does.

Kept apart from the protocol modules so choosing one imports neither codec (ProtoBuf:1 needs
the optional ``protobuf`` package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MSGPACK = "msgpack"
PROTOBUF = "protobuf"

# The "Protocol" value of the --dump document (kong-protocol.md 1.2, 3.1).
_DUMP_NAMES = {MSGPACK: "MsgPack:1", PROTOBUF: "ProtoBuf:1"}

CHOICES = tuple(_DUMP_NAMES)

CallCheck = Callable[[str, list[Any]], None]


def call_check(choice: str) -> CallCheck | None:
    """The protocol's "can Kong be sent this PDK call?" check, for worker processes (-m) to
    run before a call leaves them; None for MsgPack:1, which carries anything msgpack can
    encode. Imports ProtoBuf:1's codec (and ``protobuf``) only when that protocol is chosen."""
    if choice != PROTOBUF:
        return None
    from kongish_pdk.protocol.protobuf.calls import check

    return check


def protocol_name(choice: str) -> str:
    """``"msgpack"`` -> ``"MsgPack:1"``, ``"protobuf"`` -> ``"ProtoBuf:1"``."""
    return _DUMP_NAMES[choice]

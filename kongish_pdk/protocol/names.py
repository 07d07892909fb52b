"""The gateway protocols a server can speak, as the CLI names them and as Kong's dump does.

Kept apart from the protocol modules so choosing one imports neither codec (ProtoBuf:1 needs
the optional ``protobuf`` package).
"""

from __future__ import annotations

MSGPACK = "msgpack"
PROTOBUF = "protobuf"

# The "Protocol" value of the --dump document (kong-protocol.md 1.2, 3.1).
_DUMP_NAMES = {MSGPACK: "MsgPack:1", PROTOBUF: "ProtoBuf:1"}

CHOICES = tuple(_DUMP_NAMES)

# Where a worker process finds the protocol's "can Kong be sent this PDK call?" check, as
# "module:function" (imported only in the worker); none for MsgPack:1, which carries anything
# msgpack can encode.
CALL_CHECKS = {PROTOBUF: "kongish_pdk.protocol.protobuf.calls:check"}


def protocol_name(choice: str) -> str:
    """``"msgpack"`` -> ``"MsgPack:1"``, ``"protobuf"`` -> ``"ProtoBuf:1"``."""
    return _DUMP_NAMES[choice]

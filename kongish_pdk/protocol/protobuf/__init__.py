"""Kong's ProtoBuf:1 plugin protocol (kong-protocol.md section 3).

Importing this package imports nothing from ``protobuf``: the optional dependency is loaded
only by the modules that need it, which ``--protocol protobuf`` selects.

* ``codec.py``: frames (4-byte little-endian length + payload), bytes in and out;
* ``pluginsocket.proto`` / ``pluginsocket_pb2.py``: Kong's messages (``generate.py`` rebuilds);
* ``values.py``: ``google.protobuf.Struct``/``Value``/``ListValue`` and entities <-> Python;
* ``calls.py``: the PDK-name -> RPC table, with each call's argument and result conversion;
* ``session.py``: one connection from Kong mapped onto the runtime (sans-IO).

The name the dump gives the protocol lives in ``protocol/names.py``.
"""

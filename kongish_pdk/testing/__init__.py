"""Tools for testing plugins and plugin servers.

- :class:`~kongish_pdk.testing.kong_client.KongClient`: drives a server over MsgPack:1 like Kong.
- :func:`~kongish_pdk.testing.server_process.start_server`: a real server process for a test.
"""

from kongish_pdk.testing.kong_client import EventTrace, KongClient, RemoteError, StepError
from kongish_pdk.testing.server_process import ServerError, ServerProcess, start_server

__all__ = [
    "EventTrace",
    "KongClient",
    "RemoteError",
    "ServerError",
    "ServerProcess",
    "StepError",
    "start_server",
]

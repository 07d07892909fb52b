"""Tools for testing plugins and plugin servers.

For plugin authors (see docs/testing.md):

- :class:`Kit` loads a plugin in-process (``"local"``) or behind a real server (``"wire"``);
  ``kit.load(path, config)`` gives a :class:`PluginHarness` whose ``run(Request(...))`` plays
  a request through rewrite -> access -> upstream -> response -> log and returns a
  :class:`Result`.
- pytest fixtures (registered automatically): ``plugin_kit`` and ``kong_mode``.

For testing plugin servers themselves:

- :class:`KongClient`: drives a server over MsgPack:1 like Kong.
- :func:`start_server`: a real server process for a test.
"""

from kongish_pdk.testing.errors import (
    ConfigRejected,
    KitViolation,
    KongLuaError,
    LogPhaseError,
    NotInKit,
    PhaseError,
    PluginError,
)
from kongish_pdk.testing.fake_kong import CallRecord, ExitInfo, LogLine
from kongish_pdk.testing.http import (
    ClientResponse,
    Request,
    ServiceRequest,
    Upstream,
    UpstreamResponse,
    echo,
)
from kongish_pdk.testing.kit import MODES, Kit, PluginHarness, Result, ServerPool
from kongish_pdk.testing.kong_client import EventTrace, KongClient, RemoteError, StepError
from kongish_pdk.testing.server_process import ServerError, ServerProcess, start_server

__all__ = [
    "MODES",
    "CallRecord",
    "ClientResponse",
    "ConfigRejected",
    "EventTrace",
    "ExitInfo",
    "Kit",
    "KitViolation",
    "KongClient",
    "KongLuaError",
    "LogLine",
    "LogPhaseError",
    "NotInKit",
    "PhaseError",
    "PluginError",
    "PluginHarness",
    "RemoteError",
    "Request",
    "Result",
    "ServerError",
    "ServerPool",
    "ServerProcess",
    "ServiceRequest",
    "StepError",
    "Upstream",
    "UpstreamResponse",
    "echo",
    "start_server",
]

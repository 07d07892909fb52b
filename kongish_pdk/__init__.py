"""kongish-pdk: a Python plugin server for Kong that never hangs and never leaks."""

from kongish_pdk._version import __version__
from kongish_pdk.errors import EventStopped, PDKError, PluginLoadError

__all__ = ["EventStopped", "PDKError", "PluginLoadError", "__version__"]

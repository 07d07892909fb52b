"""kongish-pdk: a Python plugin server for Kong that never hangs and never leaks."""

from kongish_pdk._version import __version__
from kongish_pdk.errors import EventStopped, PDKError, PDKThreadError, PluginLoadError

__all__ = ["EventStopped", "PDKError", "PDKThreadError", "PluginLoadError", "__version__"]

"""Typed plugin config: annotate ``Plugin.__init__(self, config: MyConfig)`` with a dataclass
or TypedDict, and the Kong schema is derived from it (see kongish_pdk.plugin.typed_config).

``Between``, ``Length`` and ``Attrs`` go in ``Annotated[...]`` to add Kong validators.
"""

from kongish_pdk.plugin.typed_config import Attrs, Between, ConfigError, Length

__all__ = ["Attrs", "Between", "ConfigError", "Length"]

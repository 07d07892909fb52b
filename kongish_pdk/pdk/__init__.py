"""The typed Kong PDK: annotate handlers with ``kong: Kong``.

``Kong`` is generated from the PDK table (``table.py``); its methods return single values,
raise :class:`PDKError` when the gateway reports an error, and refuse unknown names.
"""

from kongish_pdk.errors import PDKError
from kongish_pdk.pdk.surface import Kong
from kongish_pdk.pdk.types import (
    Consumer,
    Credential,
    HeadersIn,
    HeaderValue,
    MultiMap,
    QueryArgsIn,
    Route,
    Service,
    UriCaptures,
)

__all__ = [
    "Consumer",
    "Credential",
    "HeaderValue",
    "HeadersIn",
    "Kong",
    "MultiMap",
    "PDKError",
    "QueryArgsIn",
    "Route",
    "Service",
    "UriCaptures",
]

"""py-request-transform: changes the request before Kong proxies it (kong.service.request).

Adds and removes upstream headers, adds query arguments, and replaces a path prefix
(e.g. ``/api/v1`` -> ``/v1``). The client's own request is untouched: only what the
upstream receives changes.
"""

from kongish_pdk.pdk import Kong

Schema = (
    {"add_headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"},
                     "default": {}}},
    {"remove_headers": {"type": "array", "elements": {"type": "string"}, "default": []}},
    {"add_query": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"},
                   "default": {}}},
    {"strip_prefix": {"type": "string"}},
    {"new_prefix": {"type": "string", "default": ""}},
)
version = "1.0.0"
priority = 801


class Plugin:
    def __init__(self, config: dict) -> None:
        self.add_headers = dict(config.get("add_headers") or {})
        self.remove_headers = list(config.get("remove_headers") or [])
        self.add_query = dict(config.get("add_query") or {})
        self.strip_prefix = config.get("strip_prefix")
        self.new_prefix = config.get("new_prefix") or ""

    def access(self, kong: Kong) -> None:
        for name in self.remove_headers:
            kong.service.request.clear_header(name)
        for name, value in self.add_headers.items():
            kong.service.request.set_header(name, value)
        if self.add_query:
            query = kong.request.get_query()
            for name, value in self.add_query.items():
                query[name] = [value]
            kong.service.request.set_query(query)
        if self.strip_prefix:
            path = kong.request.get_path()
            if path.startswith(self.strip_prefix):
                rest = path[len(self.strip_prefix):]
                kong.service.request.set_path(self.new_prefix + rest if rest else
                                              self.new_prefix or "/")

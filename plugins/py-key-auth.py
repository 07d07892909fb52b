"""py-key-auth: API-key authentication that answers 401 itself.

The key is read from the first configured header (default ``apikey``) or, if allowed, from a
query argument of the same name. A request without a valid key never reaches the upstream:
``kong.response.exit(401, ...)`` ends it. A valid key tells the upstream who the consumer is
(``x-consumer-username``) and, with ``hide_credentials``, removes the key before proxying.
"""

from kongish_pdk.pdk import Kong

Schema = (
    {"key_names": {"type": "array", "elements": {"type": "string"}, "default": ["apikey"]}},
    {"keys": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"},
              "required": True}},
    {"key_in_query": {"type": "boolean", "default": False}},
    {"hide_credentials": {"type": "boolean", "default": True}},
)
version = "1.0.0"
priority = 1250  # before most plugins, like Kong's own key-auth (1250)

CHALLENGE = {"WWW-Authenticate": 'Key realm="kong"'}


class Plugin:
    def __init__(self, config: dict) -> None:
        self.key_names = config.get("key_names") or ["apikey"]
        self.consumers = dict(config.get("keys") or {})  # key -> consumer username
        self.key_in_query = bool(config.get("key_in_query"))
        self.hide_credentials = config.get("hide_credentials", True)

    def access(self, kong: Kong) -> None:
        name, key = self._find_key(kong)
        if key is None:
            kong.response.exit(401, {"message": "No API key found in request"}, CHALLENGE)
            return
        consumer = self.consumers.get(key)
        if consumer is None:
            kong.response.exit(401, {"message": "Invalid authentication credentials"}, CHALLENGE)
            return
        kong.service.request.set_header("x-consumer-username", consumer)
        if self.hide_credentials and name is not None:
            kong.service.request.clear_header(name)

    def _find_key(self, kong: Kong) -> tuple:
        for name in self.key_names:
            value = kong.request.get_header(name)
            if value:
                return name, value
        if self.key_in_query:
            for name in self.key_names:
                value = kong.request.get_query_arg(name)
                if isinstance(value, str) and value:
                    return None, value
        return None, None

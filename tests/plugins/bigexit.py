"""Ends the request with a body larger than msgpack's default 100 MiB unpacking limit."""

version = "0.1.0"
priority = 10

Schema = ({"mib": {"type": "integer"}},)


class Plugin:
    def __init__(self, config):
        self.size = config.get("mib", 101) * 1024 * 1024

    def access(self, kong):
        kong.response.exit(200, b"x" * self.size)

"""The 4-RPC hello plugin: one header read, two header writes (HandleEvent + 3 Steps)."""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 100


class Plugin:
    def __init__(self, config):
        self.message = config.get("message", "hello")

    def access(self, kong):
        host = kong.request.get_header("host")
        kong.response.set_header("x-hello", f"{self.message} {host}")
        kong.response.set_header("x-done", "yes")

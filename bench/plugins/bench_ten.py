# Ten PDK calls per event (11 RPCs): reads and writes of the kinds a typical plugin makes.

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 100


class Plugin:
    def __init__(self, config):
        self.message = config.get("message", "hello")

    def access(self, kong):
        host = kong.request.get_header("host")
        agent = kong.request.get_header("user-agent")
        key = kong.request.get_header("x-api-key")
        path = kong.request.get_path()
        method = kong.request.get_method()
        kong.service.request.set_header("x-upstream-host", str(host))
        kong.service.request.set_header("x-seen", f"{method} {path}")
        kong.response.set_header("x-agent", str(agent))
        kong.response.set_header("x-key", "yes" if key else "no")
        kong.response.set_header("x-message", self.message)

"""Written for kong-pdk's default Lua style: every PDK call returns (value, err)."""

version = "1.0.0"


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        host, err = kong.request.get_header("host")
        kong.service.request.set_header("x-host", host if err is None else "error")
        headers, _ = kong.request.get_headers()
        kong.service.request.set_header("x-accept-count", str(len(headers.get("accept", []))))

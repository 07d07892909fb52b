"""Calls PDK functions of every ProtoBuf:1 argument and result type, and exits with what it saw."""

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        seen = {
            "headers": kong.request.get_headers(),
            "query": kong.request.get_query(50),
            "header": kong.request.get_header("x-missing"),
            "raw_query": kong.request.get_raw_query(),
            "port": kong.request.get_port(),
            "version": kong.request.get_http_version(),
            "trusted": kong.ip.is_trusted("10.0.0.1"),
            "body": kong.request.get_raw_body().decode("latin-1"),
            "captures": kong.request.get_uri_captures(),
            "consumer": kong.client.get_consumer(),
            "shared": kong.ctx.shared.get("k"),
            "route": kong.router.get_route(),
            "upstream": kong.service.set_upstream("backend"),
        }
        kong.ctx.shared.set("k2", {"a": [1, 2.5, "x"]})
        kong.log.notice("tour", 1, True)
        kong.service.set_target("example.com", 8080)
        kong.service.request.set_headers({"x-a": "1", "x-b": ["2", "3"]})
        kong.service.request.set_raw_body(b"\x00\x01")
        kong.client.authenticate({"id": "c1", "username": "alice"}, {"id": "k1"})
        kong.response.exit(200, seen, {"x-tour": "done"})

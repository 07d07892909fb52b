"""Reports what the PDK showed it, through kong.ctx.shared (visible to the kit in both modes)."""

from kongish_pdk.pdk import Kong

version = "1.0.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        self.config = config

    def access(self, kong: Kong) -> None:
        seen = {
            "header": kong.request.get_header("X_Custom_Header"),
            "headers": kong.request.get_headers(),
            "query": kong.request.get_query(),
            "flag": kong.request.get_query_arg("flag"),
            "body": kong.request.get_raw_body(),
            "body_type": type(kong.request.get_raw_body()).__name__,
            "path": kong.request.get_path(),
            "method": kong.request.get_method(),
            "consumer": kong.client.get_consumer(),
            "route_name": (kong.router.get_route() or {}).get("name"),
            "ip": kong.client.get_ip(),
            "before": kong.ctx.shared.get("from_earlier_plugin"),
        }
        kong.ctx.shared.set("seen", seen)
        kong.service.request.set_header("x-added", "1")
        kong.service.request.add_header("x-multi", "a")
        kong.service.request.add_header("X_Multi", "b")
        kong.service.request.clear_header("x-remove-me")
        kong.service.request.set_path("/rewritten")
        kong.service.request.set_query({"b": "2", "a": ["1", "x y"], "f": True})
        kong.response.set_header("x-from-access", "yes")
        kong.log.info("access ", 1, " ", True)  # noqa: PLE1205 (Lua-style concatenation)

    def response(self, kong: Kong) -> None:
        kong.ctx.shared.set("response_seen", {
            "status": kong.response.get_status(),
            "upstream_status": kong.service.response.get_status(),
            "upstream_header": kong.service.response.get_header("x-upstream"),
            "client_header": kong.response.get_header("x-from-access"),
            "source": kong.response.get_source(),
        })
        kong.response.set_status(201)

    def log(self, kong: Kong) -> None:
        kong.log.notice("log status=", kong.response.get_status())
        kong.ctx.shared.set("serialized_type", type(kong.log.serialize()).__name__)

"""The request's context beyond HTTP: kong.ctx, kong.nginx, kong.router, kong.plugin."""

from __future__ import annotations

from typing import Any

from kongish_pdk.testing.fake_kong.state import StateBacked
from kongish_pdk.testing.fake_kong.values import wire_copy
from kongish_pdk.testing.http import first


class ContextMixin(StateBacked):
    """``kong.ctx.shared``, ``kong.nginx``, ``kong.router`` and ``kong.plugin``."""

    # ----------------------------------------------------------------- kong.ctx

    def pdk_ctx_shared_get(self, args: list[Any]) -> Any:
        # A copy, as the wire would give: mutating it does not change kong.ctx.shared.
        return wire_copy(self.state.ctx_shared.get(args[0]))

    def pdk_ctx_shared_set(self, args: list[Any]) -> Any:
        value = wire_copy(args[1] if len(args) > 1 else None)
        if value is None:
            self.state.ctx_shared.pop(args[0], None)
        else:
            self.state.ctx_shared[args[0]] = value
        return None

    # ----------------------------------------------------------------- kong.nginx

    def pdk_nginx_get_subsystem(self, args: list[Any]) -> Any:
        return "http"

    def pdk_nginx_get_statistics(self, args: list[Any]) -> Any:
        return {"connections_active": 1, "connections_reading": 0, "connections_writing": 1,
                "connections_waiting": 0, "connections_accepted": 1, "connections_handled": 1,
                "total_requests": 1}

    def pdk_nginx_get_var(self, args: list[Any]) -> Any:
        state, request = self.state, self.state.request
        name = args[0]
        if name in request.nginx_vars:
            return request.nginx_vars[name]
        query = f"?{state.raw_query}" if state.raw_query else ""
        known: dict[str, Any] = {
            "request_uri": state.raw_path + query, "uri": state.raw_path,
            "args": state.raw_query or None, "host": request.host,
            "scheme": request.scheme, "server_port": str(request.port),
            "remote_addr": request.client_ip, "remote_port": str(request.client_port),
            "request_method": request.method.upper(),
        }
        if name in known:
            return known[name]
        if name.startswith("http_"):
            return first(state.headers, name[5:])
        return None

    def pdk_nginx_get_ctx(self, args: list[Any]) -> Any:
        return wire_copy(self.state.ngx_ctx.get(args[0]))

    def pdk_nginx_set_ctx(self, args: list[Any]) -> Any:
        self.state.ngx_ctx[args[0]] = wire_copy(args[1] if len(args) > 1 else None)
        return None

    def pdk_nginx_get_tls1_version_str(self, args: list[Any]) -> Any:
        return self.state.request.tls_version

    def pdk_nginx_req_start_time(self, args: list[Any]) -> Any:
        return self.state.request.start_time

    # ----------------------------------------------------------------- kong.router

    def pdk_router_get_route(self, args: list[Any]) -> Any:
        return self.state.request.route

    def pdk_router_get_service(self, args: list[Any]) -> Any:
        return self.state.request.service

    # ----------------------------------------------------------------- kong.plugin

    def pdk_plugin_get_id(self, args: list[Any]) -> Any:
        return self.state.plugin_id

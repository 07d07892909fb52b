"""Exercises the PDK surface mini-Kong implements beyond the example plugins.

rewrite (global plugins only): kong.ctx.shared, kong.service.request.set_header.
access: Kong's metadata keys (through ``meta``), add_header, multimaps, and, chosen by the
request header ``x-probe``:
  plugin_id kong.plugin.get_id (MsgPack:1 only: ProtoBuf:1 has no RPC for it)
  body     raw request body in (bin) and a changed body out to the upstream
  unknown  a PDK name Kong does not have (Kong logs it and answers nil)
  exit     kong.response.exit with a bytes body and headers
  error    kong.response.error(403)
  route    kong.router.get_route (StepRoute)
  refused  a call Kong refuses in this phase (a Lua error on Kong's side)
  types    a PDK answer of each scalar type (Number, Bool false, Int, nil Value, ...) and
           log varargs of mixed types
log: one JSON line per request to ``path`` with what Kong's log-phase snapshot answers.
"""

import json
import threading

Schema = ({"path": {"type": "string"}},)
version = "1.0.0"
priority = 900


class Plugin:
    def __init__(self, config, meta):
        self.path = config.get("path")
        self.meta = meta
        self.lock = threading.Lock()

    def rewrite(self, kong):
        kong.ctx.shared.set("rewrite", "ran")
        kong.service.request.set_header("x-probe-rewrite", "yes")

    def access(self, kong):
        kong.ctx.shared.set("access", f"{kong.request.get_method()} {kong.request.get_path()}")
        meta = self.meta
        kong.response.set_header("x-probe-meta", json.dumps({
            "plugin_id": meta.plugin_id, "ws_id": meta.ws_id, "key": meta.key, "seq": meta.seq,
            "instance_id": meta.instance_id,
        }))
        kong.response.add_header("x-probe-multi", "a")
        kong.response.add_header("x-probe-multi", "b")
        headers = kong.request.get_headers()
        kong.response.set_header("x-probe-seen-multi", ",".join(headers.get("x-multi", [])))
        query = kong.request.get_query()
        kong.response.set_header("x-probe-query", json.dumps(query, sort_keys=True))
        getattr(self, "_" + (kong.request.get_header("x-probe") or "none"))(kong)

    def _none(self, kong):
        pass

    def _plugin_id(self, kong):
        kong.response.set_header("x-probe-plugin-id", kong.plugin.get_id())

    def _body(self, kong):
        body = kong.request.get_raw_body()
        kong.response.set_header("x-probe-body-type", type(body).__name__)
        kong.response.set_header("x-probe-body-len", str(len(body)))
        kong.service.request.set_raw_body(body.upper())

    def _unknown(self, kong):
        value = kong.raw_call("kong.nope.missing_function", "arg")
        kong.response.set_header("x-probe-unknown", repr(value))

    def _exit(self, kong):
        kong.response.exit(418, b"\xffbinary\x00body", {"x-probe-exit": "yes"})
        kong.response.set_header("x-probe-after-exit", "must not run")

    def _error(self, kong):
        kong.response.error(403)

    def _refused(self, kong):
        kong.service.response.get_raw_body()  # Kong raises: not in access
        kong.response.set_header("x-probe-after-refused", "must not run")

    def _types(self, kong):
        kong.log.warn("probe types:", 1, 2.5, True)  # noqa: PLE1205 (Kong varargs)
        kong.response.set_header("x-probe-types", json.dumps({
            "http_version": kong.request.get_http_version(),
            "trusted": kong.ip.is_trusted("127.0.0.1"),
            "client_port": kong.client.get_port(),
            "missing": kong.ctx.shared.get("never-set"),
            "started": kong.nginx.req_start_time(),
            "method": kong.nginx.get_var("request_method"),
            "subsystem": kong.nginx.get_subsystem(),
            "node_id": kong.node.get_id(),
            "service": kong.router.get_service(),
        }))

    def _route(self, kong):
        route = kong.router.get_route()
        kong.response.set_header("x-probe-route", route["name"])

    def log(self, kong):
        record = {
            "shared": {"rewrite": kong.ctx.shared.get("rewrite"),
                       "access": kong.ctx.shared.get("access")},
            "status": kong.response.get_status(),
            "response_header": kong.response.get_header("x-probe-multi"),
            "response_headers": kong.response.get_headers(),
            "request_header": kong.request.get_header("x-probe-id"),
            "request_headers": kong.request.get_headers(),
            "serialize": json.loads(kong.log.serialize()),
        }
        with self.lock, open(self.path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")

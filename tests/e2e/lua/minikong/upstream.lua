-- minikong.upstream: the service behind mini-Kong. It answers with a JSON description of the
-- request it received, so tests can see what plugins changed on the way in:
--   {"method", "path", "args", "query", "headers", "body", "body_md5"}
-- A request header x-echo-status sets the status; paths containing "/text" answer
-- text/plain instead of JSON (for plugins that only touch JSON bodies).
local cjson = require "cjson.safe"

local ngx = ngx
local find = string.find

local _M = {}

function _M.serve()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  local status = tonumber(ngx.var.http_x_echo_status) or 200
  ngx.status = status
  if find(ngx.var.uri, "/text", 1, true) then
    ngx.header["Content-Type"] = "text/plain"
    ngx.print("plain text from upstream")
    return
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.header["X-Upstream"] = "echo"
  ngx.print(cjson.encode({
    method = ngx.req.get_method(),
    path = ngx.var.uri,
    args = ngx.var.args or "",
    query = ngx.req.get_uri_args(100),
    headers = ngx.req.get_headers(100),
    body = body or "",
    body_md5 = ngx.md5(body or ""),
  }))
end

return _M

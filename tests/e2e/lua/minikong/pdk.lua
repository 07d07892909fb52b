-- minikong.pdk: the Kong PDK functions an external plugin can call, answered from nginx.
--
-- Each function is PDK[name](rq, ...args) and returns the one value Kong would send back
-- (Kong 3.x forwards only the first return value). rq is the call's context:
--   rq.phase    "rewrite" | "access" | "response" | "log"
--   rq.plugin   the plugin entry being run (id, name, config, route)
--   rq.state    the request's mini-Kong state (shared = kong.ctx.shared, route, ...)
--   rq.snapshot log phase only: what Kong saves at log time for the 0-delay timer
-- In the log phase, Kong answers a few names from the snapshot (LOG_OVERRIDES); everything
-- else runs in the timer, where request APIs raise, as they do in Kong.
-- Lua errors raised here behave as in Kong: the plugin's phase handler fails.
local cjson = require "cjson.safe"
local rpc = require "minikong.rpc"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local type, pairs, ipairs, tostring, tonumber, error, select = type, pairs, ipairs, tostring,
                                                                tonumber, error, select
local concat, lower, gsub, find, sub = table.concat, string.lower, string.gsub, string.find,
                                       string.sub
local floor = math.floor
local bin, empty_map = rpc.bin, rpc.empty_map

local _M = {}

local NODE_ID = "3e2b7c4a-6f1d-4d2e-9a0b-1c2d3e4f5a6b"
_M.NODE_ID = NODE_ID

-- Kong's default messages for kong.response.error (kong/tools/http.lua).
local ERROR_MESSAGES = {
  [400] = "Bad request",
  [401] = "Unauthorized",
  [403] = "Forbidden",
  [404] = "Not found",
  [405] = "Method not allowed",
  [500] = "An unexpected error occurred",
  [502] = "An invalid response was received from the upstream server",
  [503] = "The upstream server is currently unavailable",
  [504] = "The upstream server is timing out",
}
_M.ERROR_MESSAGES = ERROR_MESSAGES

local HOP_BY_HOP = {
  ["connection"] = true, ["keep-alive"] = true, ["proxy-authenticate"] = true,
  ["proxy-authorization"] = true, ["te"] = true, ["trailers"] = true,
  ["transfer-encoding"] = true, ["upgrade"] = true, ["content-length"] = true,
}
_M.HOP_BY_HOP = HOP_BY_HOP

------------------------------------------------------------------------------ helpers

-- Kong's fix_mmap: header and query maps travel as name -> array of strings; a query flag
-- (true) becomes an empty array, and an empty result must be a map, not [].
local function multimap(t)
  local out, empty = {}, true
  for k, v in pairs(t) do
    empty = false
    if v == true then
      out[k] = {}
    elseif type(v) == "table" then
      out[k] = v
    else
      out[k] = { tostring(v) }
    end
  end
  if empty then
    return empty_map
  end
  return out
end
_M.multimap = multimap

local function first(v)
  if type(v) == "table" then
    return v[1]
  end
  return v
end

-- Kong's header name lookup: case-insensitive, and "_" matches "-".
local function header_key(name)
  return (gsub(lower(name), "_", "-"))
end

local function lowercase_keys(t)
  local out = {}
  for k, v in pairs(t) do
    out[lower(k)] = v
  end
  return out
end
_M.lowercase_keys = lowercase_keys

local function check_phase(rq, allowed, fname)
  if not allowed[rq.phase] then
    error(fname .. ": function cannot be called in " .. rq.phase .. " phase", 0)
  end
end

local function phases(...)
  local set = {}
  for i = 1, select("#", ...) do
    set[select(i, ...)] = true
  end
  return set
end

local REWRITE_ACCESS = phases("rewrite", "access")
local RESPONSE_WRITE = phases("rewrite", "access", "response")
local AFTER_PROXY = phases("response", "log")
local EXITABLE = phases("rewrite", "access", "response")

-- Header values Kong accepts: string, number, boolean, or an array of those.
local function check_header_value(fname, name, value)
  if type(name) ~= "string" then
    error(fname .. ": invalid header name \"" .. tostring(name) .. "\": got "
          .. type(name) .. ", expected string", 0)
  end
  local t = type(value)
  if t == "string" or t == "number" or t == "boolean" then
    return value
  end
  if t == "table" then
    for _, v in ipairs(value) do
      local vt = type(v)
      if vt ~= "string" and vt ~= "number" and vt ~= "boolean" then
        error(fname .. ": invalid header value in array \"" .. name .. "\": got " .. vt
              .. ", expected string", 0)
      end
    end
    return value
  end
  error(fname .. ": invalid header value for \"" .. name .. "\": got " .. t
        .. ", expected string, number or boolean", 0)
end

local function log_text(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  return concat(parts)
end

------------------------------------------------------------------------------ serialize

local function latencies(state)
  local request = floor((tonumber(var.request_time) or 0) * 1000)
  local upstream = tonumber(state.upstream_time or var.upstream_response_time)
  local proxy = upstream and floor(upstream * 1000) or -1
  return {
    request = request,
    proxy = proxy,
    kong = proxy >= 0 and request - proxy or request,
    receive = 0,
  }
end

local function set_dotted(t, key, value)
  local node = t
  local from = 1
  while true do
    local dot = find(key, ".", from, true)
    if not dot then
      node[sub(key, from)] = value
      return
    end
    local part = sub(key, from, dot - 1)
    if type(node[part]) ~= "table" then
      node[part] = {}
    end
    node = node[part]
    from = dot + 1
  end
end

--- What Kong's kong.log.serialize() returns (the basic log serializer), built at log time.
function _M.serialize(state)
  local request_headers = req.get_headers(100)
  local redacted = {}
  for k, v in pairs(request_headers) do
    redacted[k] = v
  end
  if redacted["authorization"] then
    redacted["authorization"] = "REDACTED"
  end
  if redacted["proxy-authorization"] then
    redacted["proxy-authorization"] = "REDACTED"
  end
  local route = state.route
  local entry = {
    request = {
      id = var.request_id,
      uri = var.request_uri,
      url = var.scheme .. "://" .. var.host .. ":" .. var.server_port .. var.request_uri,
      querystring = req.get_uri_args(100),
      method = req.get_method(),
      headers = redacted,
      size = tonumber(var.request_length),
    },
    upstream_uri = state.upstream_uri,
    upstream_status = var.upstream_status,
    response = {
      status = ngx.status,
      headers = ngx.resp.get_headers(100),
      size = tonumber(var.bytes_sent),
    },
    latencies = latencies(state),
    tries = {},
    client_ip = var.remote_addr,
    started_at = floor(req.start_time() * 1000),
    source = state.response_source or "service",
    workspace = state.ws_id,
    route = route and route.entity or nil,
    service = route and route.service or nil,
    consumer = state.consumer,
  }
  for key, value in pairs(state.serialize_values) do
    set_dotted(entry, key, value)
  end
  return entry
end

------------------------------------------------------------------------------ responses

--- Kong's kong.response.exit: a table body is sent as JSON.
function _M.exit_response(status, body, headers)
  local content_type
  if headers then
    for k, v in pairs(headers) do
      if lower(k) == "content-type" then
        content_type = v
      end
    end
  end
  if type(body) == "table" then
    body = cjson.encode(body)
    content_type = content_type or "application/json; charset=utf-8"
  end
  return { status = status, body = body, headers = headers, content_type = content_type }
end

function _M.error_response(status, message, headers)
  if message == nil then
    message = ERROR_MESSAGES[status] or "An unexpected error occurred"
  end
  local body = type(message) == "table" and message or { message = message }
  return _M.exit_response(status, body, headers)
end

-- Kong answers neither: in access it stores a delayed response and stops running plugins,
-- in rewrite and response it ends the request at once. Both end the same way here: the
-- runner stops iterating and the gateway sends this response.
local function terminate(rq, fname, response)
  check_phase(rq, EXITABLE, fname)
  rq.state.delayed_response = response
  rq.state.response_source = "exit"
  return nil
end

------------------------------------------------------------------------------ the table

local PDK = {}
_M.PDK = PDK

-- kong.client
PDK["kong.client.get_ip"] = function() return var.remote_addr end
PDK["kong.client.get_forwarded_ip"] = function() return var.remote_addr end
PDK["kong.client.get_port"] = function() return tonumber(var.remote_port) end
PDK["kong.client.get_forwarded_port"] = function() return tonumber(var.remote_port) end
PDK["kong.client.get_protocol"] = function() return var.scheme end
PDK["kong.client.get_consumer"] = function(rq) return rq.state.consumer end
PDK["kong.client.get_credential"] = function(rq) return rq.state.credential end
PDK["kong.client.load_consumer"] = function() return nil end
PDK["kong.client.authenticate"] = function(rq, consumer, credential)
  check_phase(rq, REWRITE_ACCESS, "kong.client.authenticate")
  rq.state.consumer = consumer
  rq.state.credential = credential
end

-- kong.ctx.shared: one table per request; the log phase sees the same table
PDK["kong.ctx.shared.get"] = function(rq, k) return rq.state.shared[k] end
PDK["kong.ctx.shared.set"] = function(rq, k, v) rq.state.shared[k] = v end

-- kong.ip
PDK["kong.ip.is_trusted"] = function() return false end

-- kong.log: namespaced with the plugin's name, as Kong does for each plugin
local LOG_LEVELS = {
  alert = ngx.ALERT, crit = ngx.CRIT, err = ngx.ERR, warn = ngx.WARN,
  notice = ngx.NOTICE, info = ngx.INFO, debug = ngx.DEBUG, emerg = ngx.EMERG,
}
for name, level in pairs(LOG_LEVELS) do
  PDK["kong.log." .. name] = function(rq, ...)
    ngx.log(level, "[kong] [", rq.plugin.name, "] ", log_text(...))
  end
end
PDK["kong.log"] = PDK["kong.log.notice"]
PDK["kong.log.deprecation"] = PDK["kong.log.warn"]
PDK["kong.log.inspect"] = PDK["kong.log.debug"]
PDK["kong.log.serialize"] = function(rq)
  return cjson.encode(_M.serialize(rq.state))
end
PDK["kong.log.set_serialize_value"] = function(rq, key, value)
  if type(key) ~= "string" then
    error("kong.log.set_serialize_value: key must be a string", 0)
  end
  rq.state.serialize_values[key] = value
end

-- kong.nginx
PDK["kong.nginx.get_subsystem"] = function() return "http" end
PDK["kong.nginx.get_var"] = function(_, name) return var[name] end
PDK["kong.nginx.get_ctx"] = function(_, k) return ngx.ctx[k] end
PDK["kong.nginx.set_ctx"] = function(_, k, v) ngx.ctx[k] = v end
PDK["kong.nginx.req_start_time"] = function() return req.start_time() end
PDK["kong.nginx.get_tls1_version_str"] = function() return nil end

-- kong.node / kong.plugin / kong.router
PDK["kong.node.get_id"] = function() return NODE_ID end
PDK["kong.node.get_hostname"] = function() return "minikong" end
PDK["kong.plugin.get_id"] = function(rq) return rq.plugin.id end
PDK["kong.router.get_route"] = function(rq)
  local route = rq.state.route
  return route and route.entity or nil
end
PDK["kong.router.get_service"] = function(rq)
  local route = rq.state.route
  return route and route.service or nil
end

-- kong.request
PDK["kong.request.get_scheme"] = function() return var.scheme end
PDK["kong.request.get_host"] = function() return var.host end
PDK["kong.request.get_port"] = function() return tonumber(var.server_port) end
PDK["kong.request.get_forwarded_scheme"] = function() return var.scheme end
PDK["kong.request.get_forwarded_host"] = function() return var.host end
PDK["kong.request.get_forwarded_port"] = function() return tonumber(var.server_port) end
PDK["kong.request.get_forwarded_path"] = function() return var.uri end
PDK["kong.request.get_forwarded_prefix"] = function() return nil end
PDK["kong.request.get_http_version"] = function() return req.http_version() end
PDK["kong.request.get_method"] = function() return req.get_method() end
PDK["kong.request.get_path"] = function() return var.uri end
PDK["kong.request.get_raw_path"] = function()
  local uri = var.request_uri
  local q = find(uri, "?", 1, true)
  return q and sub(uri, 1, q - 1) or uri
end
PDK["kong.request.get_path_with_query"] = function()
  local args = var.args
  if args and args ~= "" then
    return var.uri .. "?" .. args
  end
  return var.uri
end
PDK["kong.request.get_raw_query"] = function() return var.args or "" end
PDK["kong.request.get_query_arg"] = function(_, name)
  return first(req.get_uri_args(100)[name])
end
PDK["kong.request.get_query"] = function(_, max)
  return multimap(req.get_uri_args(max or 100))
end
PDK["kong.request.get_header"] = function(_, name)
  if type(name) ~= "string" then
    error("kong.request.get_header: header name must be a string", 0)
  end
  return var["http_" .. gsub(lower(name), "-", "_")]
end
PDK["kong.request.get_headers"] = function(_, max)
  return multimap(req.get_headers(max or 100))
end
PDK["kong.request.get_raw_body"] = function(rq)
  check_phase(rq, phases("rewrite", "access", "response"), "kong.request.get_raw_body")
  req.read_body()
  local body = req.get_body_data()
  if body == nil then
    local file = req.get_body_file()
    if file then
      return nil -- spooled to disk and no size was allowed: Kong answers nil too
    end
    body = ""
  end
  return bin(body)
end
PDK["kong.request.get_body"] = function()
  req.read_body()
  local body = req.get_body_data()
  local ctype = var.content_type or ""
  if body and find(ctype, "json", 1, true) then
    return cjson.decode(body)
  end
  if find(ctype, "x-www-form-urlencoded", 1, true) then
    return req.get_post_args(100)
  end
  return nil
end
PDK["kong.request.get_start_time"] = function() return floor(req.start_time() * 1000) end
PDK["kong.request.get_uri_captures"] = function()
  return { unnamed = empty_map, named = {} }
end

-- kong.response
PDK["kong.response.get_status"] = function() return ngx.status end
PDK["kong.response.get_header"] = function(_, name)
  return first(ngx.resp.get_headers(100)[header_key(name)])
end
PDK["kong.response.get_headers"] = function(_, max)
  return multimap(ngx.resp.get_headers(max or 100))
end
PDK["kong.response.get_source"] = function(rq)
  return rq.state.response_source or "service"
end
PDK["kong.response.get_raw_body"] = function(rq)
  check_phase(rq, phases("response"), "kong.response.get_raw_body")
  return bin(rq.state.buffered.body)
end
PDK["kong.response.set_status"] = function(rq, status)
  check_phase(rq, RESPONSE_WRITE, "kong.response.set_status")
  if type(status) ~= "number" then
    error("kong.response.set_status: code must be a number", 0)
  end
  if rq.phase == "response" then
    rq.state.buffered.status = status
  end
  ngx.status = status
end
PDK["kong.response.set_header"] = function(rq, name, value)
  check_phase(rq, RESPONSE_WRITE, "kong.response.set_header")
  ngx.header[name] = check_header_value("kong.response.set_header", name, value)
end
PDK["kong.response.add_header"] = function(rq, name, value)
  check_phase(rq, RESPONSE_WRITE, "kong.response.add_header")
  check_header_value("kong.response.add_header", name, value)
  local current = ngx.header[name]
  if current == nil then
    ngx.header[name] = value
  elseif type(current) == "table" then
    current[#current + 1] = value
    ngx.header[name] = current
  else
    ngx.header[name] = { current, value }
  end
end
PDK["kong.response.clear_header"] = function(rq, name)
  check_phase(rq, RESPONSE_WRITE, "kong.response.clear_header")
  ngx.header[name] = nil
end
PDK["kong.response.set_headers"] = function(rq, headers)
  check_phase(rq, RESPONSE_WRITE, "kong.response.set_headers")
  if type(headers) ~= "table" then
    error("kong.response.set_headers: headers must be a table", 0)
  end
  for name, value in pairs(headers) do
    ngx.header[name] = check_header_value("kong.response.set_headers", name, value)
  end
end
PDK["kong.response.set_raw_body"] = function(rq, body)
  check_phase(rq, phases("response"), "kong.response.set_raw_body")
  if type(body) ~= "string" then
    error("kong.response.set_raw_body: body must be a string", 0)
  end
  rq.state.buffered.body = body
end
PDK["kong.response.exit"] = function(rq, status, body, headers)
  if type(status) ~= "number" then
    error("kong.response.exit: code must be a number", 0)
  end
  return terminate(rq, "kong.response.exit", _M.exit_response(status, body, headers))
end
PDK["kong.response.error"] = function(rq, status, message, headers)
  if type(status) ~= "number" then
    error("kong.response.error: code must be a number", 0)
  end
  return terminate(rq, "kong.response.error", _M.error_response(status, message, headers))
end

-- kong.service
PDK["kong.service.set_retries"] = function() end
PDK["kong.service.set_timeouts"] = function() end
PDK["kong.service.set_tls_verify"] = function() end

-- kong.service.request: changes what the upstream receives
PDK["kong.service.request.set_scheme"] = function(rq, scheme)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_scheme")
  if scheme ~= "http" and scheme ~= "https" then
    error("kong.service.request.set_scheme: invalid scheme: " .. tostring(scheme), 0)
  end
  rq.state.upstream_scheme = scheme
end
PDK["kong.service.request.set_path"] = function(rq, path)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_path")
  if type(path) ~= "string" or sub(path, 1, 1) ~= "/" then
    error("kong.service.request.set_path: path must start with /", 0)
  end
  rq.state.upstream_path = path
end
PDK["kong.service.request.set_raw_query"] = function(rq, query)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_raw_query")
  if type(query) ~= "string" then
    error("kong.service.request.set_raw_query: query must be a string", 0)
  end
  req.set_uri_args(query)
end
PDK["kong.service.request.set_method"] = function(rq, method)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_method")
  local m = ngx["HTTP_" .. tostring(method)]
  if type(m) ~= "number" then
    error("kong.service.request.set_method: invalid method: " .. tostring(method), 0)
  end
  req.set_method(m)
end
PDK["kong.service.request.set_query"] = function(rq, args)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_query")
  if type(args) ~= "table" then
    error("kong.service.request.set_query: args must be a table", 0)
  end
  req.set_uri_args(args)
end
PDK["kong.service.request.clear_query_arg"] = function(rq, name)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.clear_query_arg")
  local args = req.get_uri_args(100)
  args[name] = nil
  req.set_uri_args(args)
end
PDK["kong.service.request.set_header"] = function(rq, name, value)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_header")
  req.set_header(name, check_header_value("kong.service.request.set_header", name, value))
end
PDK["kong.service.request.add_header"] = function(rq, name, value)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.add_header")
  check_header_value("kong.service.request.add_header", name, value)
  local current = req.get_headers(100)[lower(name)]
  if current == nil then
    req.set_header(name, value)
  elseif type(current) == "table" then
    current[#current + 1] = value
    req.set_header(name, current)
  else
    req.set_header(name, { current, value })
  end
end
PDK["kong.service.request.clear_header"] = function(rq, name)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.clear_header")
  if type(name) ~= "string" then
    error("kong.service.request.clear_header: header name must be a string", 0)
  end
  req.clear_header(name)
end
PDK["kong.service.request.set_headers"] = function(rq, headers)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_headers")
  if type(headers) ~= "table" then
    error("kong.service.request.set_headers: headers must be a table", 0)
  end
  for name, value in pairs(headers) do
    req.set_header(name, check_header_value("kong.service.request.set_headers", name, value))
  end
end
PDK["kong.service.request.set_raw_body"] = function(rq, body)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.set_raw_body")
  if type(body) ~= "string" then
    error("kong.service.request.set_raw_body: body must be a string", 0)
  end
  req.read_body()
  req.set_body_data(body)
end
PDK["kong.service.request.enable_buffering"] = function(rq)
  check_phase(rq, REWRITE_ACCESS, "kong.service.request.enable_buffering")
  rq.state.buffered_proxying = true
end

-- kong.service.response: the buffered upstream response (response phase)
PDK["kong.service.response.get_status"] = function(rq)
  check_phase(rq, AFTER_PROXY, "kong.service.response.get_status")
  local buffered = rq.state.buffered
  return buffered and buffered.upstream_status or tonumber(var.upstream_status)
end
PDK["kong.service.response.get_header"] = function(rq, name)
  check_phase(rq, AFTER_PROXY, "kong.service.response.get_header")
  local buffered = rq.state.buffered
  if not buffered then
    return nil
  end
  return first(buffered.headers[header_key(name)])
end
PDK["kong.service.response.get_headers"] = function(rq)
  check_phase(rq, AFTER_PROXY, "kong.service.response.get_headers")
  -- Kong 3.10 keeps these headers behind a metatable __index, and the msgpack packer walks
  -- the table with pairs(): the map arrives empty (kong-protocol.md 6.22). Same here, so a
  -- plugin that relies on it fails in these tests as it would in Kong.
  return empty_map
end
PDK["kong.service.response.get_raw_body"] = function(rq)
  check_phase(rq, phases("response"), "kong.service.response.get_raw_body")
  return bin(rq.state.buffered.upstream_body)
end

------------------------------------------------------------------------------ log phase

-- Kong's overrides answered from the snapshot taken at log time (kong-protocol.md 4.2).
local LOG_OVERRIDES = {
  ["kong.log.serialize"] = function(rq) return cjson.encode(rq.snapshot.serialize_data) end,
  ["kong.request.get_header"] = function(rq, name)
    return first(rq.snapshot.request_headers[header_key(name)])
  end,
  ["kong.request.get_headers"] = function(rq) return multimap(rq.snapshot.request_headers) end,
  ["kong.response.get_status"] = function(rq) return rq.snapshot.response_status end,
  ["kong.response.get_header"] = function(rq, name)
    return first(rq.snapshot.response_headers[header_key(name)])
  end,
  ["kong.response.get_headers"] = function(rq) return multimap(rq.snapshot.response_headers) end,
  ["kong.response.get_source"] = function(rq) return rq.snapshot.response_source end,
  ["kong.nginx.get_ctx"] = function(rq, k) return rq.snapshot.ngx_ctx[k] end,
  ["kong.nginx.set_ctx"] = function(rq, k, v) rq.snapshot.ngx_ctx[k] = v end,
  ["kong.nginx.req_start_time"] = function(rq) return rq.snapshot.start_time end,
}

--- Taken in log_by_lua, handed to the 0-delay timer that runs the log handlers.
function _M.snapshot(state)
  local ngx_ctx = {}
  for k, v in pairs(ngx.ctx) do
    ngx_ctx[k] = v
  end
  return {
    serialize_data = _M.serialize(state),
    request_headers = req.get_headers(100),
    response_headers = ngx.resp.get_headers(100),
    response_status = ngx.status,
    response_source = state.response_source or "service",
    start_time = req.start_time(),
    ngx_ctx = ngx_ctx,
  }
end

--- The function Kong would call for this PDK name, or nil (Kong logs and answers nil).
function _M.lookup(rq, name)
  if rq.snapshot then
    local override = LOG_OVERRIDES[name]
    if override then
      return override
    end
  end
  return PDK[name]
end

-- The Step* method Kong answers each PDK call with (Kong's get_step_method).
_M.STEP_METHOD = {
  ["kong.request.get_query"] = "plugin.StepMultiMap",
  ["kong.request.get_headers"] = "plugin.StepMultiMap",
  ["kong.response.get_headers"] = "plugin.StepMultiMap",
  ["kong.service.response.get_headers"] = "plugin.StepMultiMap",
  ["kong.client.get_credential"] = "plugin.StepCredential",
  ["kong.client.authenticate"] = "plugin.StepCredential",
  ["kong.client.load_consumer"] = "plugin.StepConsumer",
  ["kong.client.get_consumer"] = "plugin.StepConsumer",
  ["kong.router.get_route"] = "plugin.StepRoute",
  ["kong.router.get_service"] = "plugin.StepService",
  ["kong.node.get_memory_stats"] = "plugin.StepMemoryStats",
}

-- Kong never answers these: the event ends with them.
_M.TERMINAL = {
  ["kong.response.exit"] = true,
  ["kong.response.error"] = true,
}

return _M

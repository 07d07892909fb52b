-- minikong.gateway: the Kong runloop in miniature, for nginx's phases.
--
--   init(path)     master process: reads the gateway config (routes, plugins, plugin
--                  servers), runs each plugin server's query_cmd with io.popen (bounded by
--                  timeout) and reads its --dump JSON like Kong, validates it as Kong
--                  would, applies schema defaults and Kong's metadata keys to every plugin
--                  config.
--   init_worker()  per worker: RPC objects, __seq__ from a shared counter (unique across
--                  workers, as in Kong 3.6+), plugin lists per route and phase by priority.
--   rewrite()      global plugins only (Kong runs the router after rewrite).
--   access()       router, access plugins, delayed response (exit), then either plain
--                  proxying or buffered proxying when a plugin has a response phase.
--   log()          snapshot now, run log handlers in a 0-delay timer (no cosockets here).
--
-- A plugin server with a start_cmd is started and supervised by worker 0 (minikong.process,
-- posix_spawn through LuaJIT's FFI, since Debian's nginx has no ngx.pipe); one without is
-- "externally managed", as in Kong: the test harness starts it.
local cjson = require "cjson.safe"
local rpc = require "minikong.rpc"
local pb_rpc = require "minikong.pb_rpc"
local pdk = require "minikong.pdk"
local runner = require "minikong.runner"
local process = require "minikong.process"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local type, pairs, ipairs, tostring, error, pcall = type, pairs, ipairs, tostring, error, pcall
local sort, lower, sub, find, gsub = table.sort, string.lower, string.sub, string.find,
                                     string.gsub
local ERR = ngx.ERR

local _M = {}

local PHASES = { certificate = true, rewrite = true, access = true, response = true,
                 preread = true, log = true }
local EMPTY_ARRAY = "\0minikong-empty-array\0"

local conf           -- the decoded gateway config (set in init, inherited by workers)
local infos = {}     -- plugin name -> { info = dump entry, server = pluginserver entry }
local routes = {}    -- sorted by longest path first
local globals = {}   -- phase -> global plugins with that phase, by priority
local shm

------------------------------------------------------------------------------ init

local function fail(message)
  error("[minikong] " .. message, 0)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    fail("cannot read " .. path .. ": " .. tostring(err))
  end
  local text = f:read("*a")
  f:close()
  return text
end

local function check_info(server, info)
  local where = "pluginserver " .. server.name .. ": "
  if type(info) ~= "table" then
    fail(where .. "not a plugin info table: " .. tostring(info))
  end
  local name = info.Name
  if type(name) ~= "string" or name == "" then
    fail(where .. "plugin info without a Name")
  end
  where = where .. "plugin " .. name .. ": "
  local prio = info.Priority
  if type(prio) ~= "number" or prio ~= math.floor(prio) or prio ~= prio then
    fail(where .. "PRIORITY field is not a valid integer number")
  end
  if type(info.Version) ~= "string" or not ngx.re.find(info.Version, [[^\d+(\.\d+){0,2}$]],
                                                          "jo") then
    fail(where .. "VERSION field does not follow the \"x.y.z\" format")
  end
  if type(info.Phases) ~= "table" then
    fail(where .. "no Phases list")
  end
  for _, phase in ipairs(info.Phases) do
    if not PHASES[phase] then
      fail(where .. "unknown phase " .. tostring(phase))
    end
  end
  local schema = info.Schema
  if type(schema) ~= "table" or type(schema.name) ~= "string"
     or type(schema.fields) ~= "table" then
    fail(where .. "Schema must have a name and a fields array")
  end
  local record
  for _, field in ipairs(schema.fields) do
    if type(field) == "table" and field.config then
      record = field.config
    end
  end
  if type(record) ~= "table" or record.type ~= "record" or type(record.fields) ~= "table" then
    fail(where .. "Schema has no config record with fields")
  end
  return record.fields
end

-- A dump that hangs must not hang nginx's start nor outlive it: coreutils' timeout ends it
-- (SIGTERM to its process group, SIGKILL 5 s later); its output then fails to decode.
local QUERY_TIMEOUT = 30 -- seconds

-- Kong runs query_cmd through /bin/sh (io.popen) and decodes all of stdout as JSON. Here the
-- same /bin/sh -c runs under timeout.
local function query(server)
  local quoted = "'" .. gsub(server.query_cmd, "'", "'\\''") .. "'"
  local pipe, err = io.popen("exec timeout -k 5 " .. QUERY_TIMEOUT .. " /bin/sh -c " .. quoted,
                             "r")
  if not pipe then
    fail("pluginserver " .. server.name .. ": cannot run query_cmd: " .. tostring(err))
  end
  local out = pipe:read("*a")
  pipe:close()
  local doc, derr = cjson.decode(out)
  if type(doc) ~= "table" then
    fail("pluginserver " .. server.name .. ": failed decoding plugin info: " .. tostring(derr)
         .. " (query_cmd printed: " .. sub(out, 1, 300) .. ")")
  end
  -- Kong speaks ProtoBuf:1 only when the dump says exactly that, else MsgPack:1; mini-Kong
  -- refuses a protocol it does not know instead of guessing.
  local protocol = doc.Protocol or "MsgPack:1"
  if protocol ~= "MsgPack:1" and protocol ~= pb_rpc.PROTOCOL then
    fail("pluginserver " .. server.name .. ": protocol " .. tostring(protocol)
         .. " is not spoken by mini-Kong")
  end
  server.protocol = protocol
  ngx.log(ngx.NOTICE, "[minikong] pluginserver ", server.name, " speaks ", protocol)
  local list = doc.Plugins or doc
  if server.first_only then
    list = { list[1] } -- Kong 3.9+ reads only the first plugin of a dump
  end
  for _, info in ipairs(list) do
    local fields = check_info(server, info)
    if infos[info.Name] then
      fail("plugin " .. info.Name .. " is served by two plugin servers")
    end
    infos[info.Name] = { info = info, server = server, fields = fields }
  end
end

-- What Kong sends as Config: the plugin's config with schema defaults applied (null for
-- unset fields), plus Kong's metadata keys.
local function full_config(plugin, entry)
  local config = plugin.config or {}
  if type(config) ~= "table" then
    fail("plugin " .. plugin.name .. ": config must be an object")
  end
  for _, field in ipairs(entry.fields) do
    local fname, def = next(field)
    local value = config[fname]
    if value == nil then
      if def.default ~= nil then
        value = def.default
      elseif def.required then
        fail("plugin " .. plugin.name .. ": config." .. fname .. " is required")
      else
        value = cjson.null
      end
    end
    if def.type == "array" and type(value) == "table" and next(value) == nil then
      value = EMPTY_ARRAY -- cjson would write {} for an empty Lua table
    end
    config[fname] = value
  end
  if plugin.route then
    config.route_id = plugin.route_id
  end
  config.__plugin_id = plugin.id
  config.__ws_id = conf.workspace_id
  config.__key__ = "plugins:" .. plugin.name .. ":" .. (plugin.route_id or "") .. "::"
                   .. ":" .. conf.workspace_id
  return config
end

local function by_priority(a, b)
  if a.priority ~= b.priority then
    return a.priority > b.priority
  end
  return a.name < b.name
end

function _M.init(config_path)
  local err
  conf, err = cjson.decode(read_file(config_path))
  if type(conf) ~= "table" then
    fail("bad config " .. config_path .. ": " .. tostring(err))
  end
  for _, server in ipairs(conf.pluginservers) do
    query(server)
  end
  local route_ids = {}
  for _, route in ipairs(conf.routes) do
    route_ids[route.name] = route.id
  end
  for _, plugin in ipairs(conf.plugins) do
    local entry = infos[plugin.name]
    if not entry then
      fail("plugin " .. plugin.name .. " is not served by any configured plugin server")
    end
    if plugin.route and not route_ids[plugin.route] then
      fail("plugin " .. plugin.name .. " names unknown route " .. tostring(plugin.route))
    end
    plugin.route_id = plugin.route and route_ids[plugin.route] or nil
    plugin.config = full_config(plugin, entry)
    plugin.priority = entry.info.Priority
    plugin.phases = {}
    for _, phase in ipairs(entry.info.Phases) do
      plugin.phases[phase] = true
    end
    plugin.server = entry.server
  end
  ngx.log(ngx.NOTICE, "[minikong] loaded ", #conf.plugins, " plugin(s) on ", #conf.routes,
          " route(s)")
end

------------------------------------------------------------------------------ init_worker

local function phase_lists(plugins)
  local lists = {}
  for phase in pairs(PHASES) do
    local list = {}
    for _, plugin in ipairs(plugins) do
      if plugin.phases[phase] then
        list[#list + 1] = plugin
      end
    end
    sort(list, by_priority)
    lists[phase] = list
  end
  return lists
end

function _M.init_worker()
  shm = ngx.shared.minikong
  runner.init_worker(shm)
  local rpcs = {}
  for _, server in ipairs(conf.pluginservers) do
    if server.protocol == pb_rpc.PROTOCOL then
      rpcs[server.name] = pb_rpc.new(server.name, server.socket,
                                     { timeout = conf.rpc_timeout_ms })
    else
      rpcs[server.name] = rpc.new(server.name, server.socket, {
        timeout = conf.rpc_timeout_ms,
        on_server_pid = runner.reset_rpc,
      })
    end
  end
  local global_plugins, by_route = {}, {}
  for _, plugin in ipairs(conf.plugins) do
    plugin.rpc = rpcs[plugin.server.name]
    -- Kong draws __seq__ from a shared counter each time it builds its plugin iterator
    plugin.config.__seq__ = shm:incr("__seq__", 1, 0)
    local json = cjson.encode(plugin.config)
    plugin.config_json = gsub(json, '"\\u0000minikong%-empty%-array\\u0000"', "[]")
    if plugin.route then
      by_route[plugin.route] = by_route[plugin.route] or {}
      local list = by_route[plugin.route]
      list[#list + 1] = plugin
    else
      global_plugins[#global_plugins + 1] = plugin
    end
  end
  globals = phase_lists(global_plugins)
  routes = {}
  for _, route in ipairs(conf.routes) do
    local all = {}
    for _, p in ipairs(global_plugins) do
      all[#all + 1] = p
    end
    for _, p in ipairs(by_route[route.name] or {}) do
      all[#all + 1] = p
    end
    local entry = {
      name = route.name,
      paths = route.paths,
      strip_path = route.strip_path,
      plugins = phase_lists(all),
      entity = { id = route.id, name = route.name, paths = route.paths,
                 strip_path = route.strip_path or false, protocols = { "http" } },
      service = { id = conf.service_id, name = "echo", host = "service", port = 80,
                  protocol = "http", path = "/" },
    }
    entry.buffered = #entry.plugins.response > 0
    for _, path in ipairs(route.paths) do
      routes[#routes + 1] = { prefix = path, route = entry }
    end
  end
  sort(routes, function(a, b) return #a.prefix > #b.prefix end)
  process.init_worker(conf.pluginservers)
  ngx.log(ngx.NOTICE, "[minikong] worker ", ngx.worker.id(), " ready")
end

function _M.exit_worker()
  process.exit_worker()
end

------------------------------------------------------------------------------ requests

local function state_of()
  local ctx = ngx.ctx
  local state = ctx.minikong
  if not state then
    state = { shared = {}, serialize_values = {}, ws_id = conf.workspace_id }
    ctx.minikong = state
  end
  return state
end

local function match(path)
  for _, r in ipairs(routes) do
    local prefix = r.prefix
    if sub(path, 1, #prefix) == prefix then
      return r.route, prefix
    end
  end
end

-- Runs each plugin of the list for the phase, in priority order, until one ends the request.
-- A Lua error (StartInstance failed, a PDK function raised, a protocol violation) is Kong's
-- "An unexpected error occurred" 500.
local function run_plugins(state, list, phase)
  for i = 1, #list do
    local plugin = list[i]
    local ok, err = pcall(runner.handle_event, { phase = phase, plugin = plugin,
                                                 state = state })
    if not ok then
      ngx.log(ERR, "[minikong] ", plugin.name, " ", phase, " failed: ", tostring(err))
      state.delayed_response = pdk.error_response(500)
      state.response_source = "error"
      return
    end
    if state.delayed_response then
      return
    end
  end
end

local function send(status, body, headers, content_type)
  ngx.status = status
  if headers then
    for k, v in pairs(headers) do
      ngx.header[k] = v
    end
  end
  if content_type then
    ngx.header["Content-Type"] = content_type
  end
  body = body or ""
  ngx.header["Content-Length"] = #body
  if body == "" then
    ngx.send_headers()
  else
    ngx.print(body)
  end
  return ngx.exit(ngx.HTTP_OK)
end

local function flush(response)
  return send(response.status, response.body, response.headers, response.content_type)
end

function _M.rewrite()
  local list = globals.rewrite
  if #list == 0 then
    return
  end
  local state = state_of()
  run_plugins(state, list, "rewrite")
  if state.delayed_response then
    return flush(state.delayed_response)
  end
end

local function raw_path()
  local uri = var.request_uri
  local q = find(uri, "?", 1, true)
  return q and sub(uri, 1, q - 1) or uri
end

-- Kong's buffered proxying: the upstream call is a subrequest, the whole response is kept,
-- the response handlers may change it, then it is sent.
local function buffered_proxy(state)
  req.read_body()
  local started = ngx.now()
  local res = ngx.location.capture("/kong_buffered_http", {
    method = ngx["HTTP_" .. req.get_method()],
    always_forward_body = true,
    copy_all_vars = true,
  })
  ngx.update_time()
  state.upstream_time = ngx.now() - started
  if not res or res.status == 0 then
    return flush(pdk.error_response(502))
  end
  state.buffered = {
    status = res.status,
    upstream_status = res.status,
    headers = pdk.lowercase_keys(res.header),
    upstream_body = res.body,
    body = res.body,
  }
  ngx.status = res.status
  for k, v in pairs(res.header) do
    if not pdk.HOP_BY_HOP[lower(k)] then
      ngx.header[k] = v
    end
  end
  run_plugins(state, state.route.plugins.response, "response")
  if state.delayed_response then
    return flush(state.delayed_response)
  end
  return send(state.buffered.status, state.buffered.body)
end

function _M.access()
  local state = state_of()
  local path = raw_path()
  local route, prefix = match(path)
  if not route then
    state.response_source = "error"
    return flush(pdk.exit_response(404, { message = "no Route matched with those values" }))
  end
  state.route = route
  if route.strip_path then
    path = sub(path, #prefix + 1)
    if sub(path, 1, 1) ~= "/" then
      path = "/" .. path
    end
  end
  state.upstream_path = path
  run_plugins(state, route.plugins.access, "access")
  if state.delayed_response then
    return flush(state.delayed_response)
  end
  -- Kong's access.after: the path plugins chose, plus the query (which they may have set)
  local upstream_uri = state.upstream_path
  local args = var.args
  if args and args ~= "" then
    upstream_uri = upstream_uri .. "?" .. args
  end
  var.upstream_uri = upstream_uri
  state.upstream_uri = upstream_uri
  if route.buffered or state.buffered_proxying then
    return buffered_proxy(state)
  end
end

local function log_timer(premature, plugin, state, snapshot)
  if premature then
    return
  end
  local ok, err = pcall(runner.handle_event, { phase = "log", plugin = plugin, state = state,
                                               snapshot = snapshot })
  if not ok then
    ngx.log(ERR, "[minikong] ", plugin.name, " log failed: ", tostring(err))
  end
end

function _M.log()
  local state = ngx.ctx.minikong
  local list = state and state.route and state.route.plugins.log or globals.log
  if not list or #list == 0 then
    return
  end
  state = state or state_of()
  local snapshot = pdk.snapshot(state)
  for i = 1, #list do
    local ok, err = ngx.timer.at(0, log_timer, list[i], state, snapshot)
    if not ok then
      ngx.log(ERR, "[minikong] cannot create the log timer: ", err)
    end
  end
end

function _M.header_filter()
  ngx.header["X-Minikong-Worker"] = ngx.worker.id()
end

return _M

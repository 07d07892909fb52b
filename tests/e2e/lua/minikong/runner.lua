-- minikong.runner: runs one external plugin for one phase, as Kong's plugin_servers code does.
--
--   get_instance_id  per worker, instances are cached by plugin id (conf.__plugin_id) and
--                    reused while conf.__seq__ matches; a coroutine starting an instance
--                    claims the slot, others poll for up to 10 s (Kong's rule);
--   handle_event     HandleEvent, then one Step* per PDK call until Data == "ret"; an error
--                    containing "no plugin instance" drops this plugin's instances in every
--                    worker and runs the whole event again with a new instance; any other
--                    RPC or transport error is logged and the request goes on without the
--                    plugin's effect (MsgPack:1 behaviour).
-- A terminal PDK call (kong.response.exit / error) is never answered: the event simply ends.
--
-- ProtoBuf:1 plugin servers (plugin.rpc from minikong.pb_rpc) run the same way with Kong's
-- pb_rpc differences: the whole event runs inside rpc:handle_event on one connection; an
-- error containing "closed" (the server's way to refuse, e.g. an unknown instance) also
-- resets and retries; any other failure logs "pluginserver error" and answers
-- kong.response.error(500) (Kong 3.8+: ProtoBuf:1 is fail-closed).
local pdk = require "minikong.pdk"
local pb_rpc = require "minikong.pb_rpc"

local ngx = ngx
local type, tostring, unpack, error, pairs = type, tostring, unpack, error, pairs
local lower, find = string.lower, string.find

local ERR, WARN, NOTICE = ngx.ERR, ngx.WARN, ngx.NOTICE
local STEP_METHOD, TERMINAL = pdk.STEP_METHOD, pdk.TERMINAL
local PROTOBUF = pb_rpc.PROTOCOL

local _M = {}

local CLAIM_POLL = 0.1      -- seconds between checks while another coroutine starts the instance
local CLAIM_TIMEOUT = 10    -- Kong gives up waiting for a concurrent start after 10 s
local MAX_RESTARTS = 3      -- Kong recurses without bound; a test harness must not

-- Per worker: plugin id -> { id = instance id, seq, plugin, gen, co }
local running = {}

-- Kong broadcasts "reset_instances" to all workers; a generation counter per plugin name in
-- a shared dict does the same job: an instance started before the last reset is stale.
local shm

function _M.init_worker(shared_dict)
  shm = shared_dict
end

local function generation(name)
  return shm:get("reset:" .. name) or 0
end

local function reset_plugin(name, why)
  shm:incr("reset:" .. name, 1, 0)
  for key, info in pairs(running) do
    if info.plugin.name == name then
      running[key] = nil
    end
  end
  ngx.log(NOTICE, "[minikong] reset instances of ", name, ": ", why)
end

--- Called by an RPC object when its server reports a new pid.
function _M.reset_rpc(rpc, old_pid, new_pid)
  local dropped = 0
  for key, info in pairs(running) do
    if info.plugin.rpc == rpc then
      running[key] = nil
      dropped = dropped + 1
    end
  end
  ngx.log(NOTICE, "[minikong] serverPid of ", rpc.name, " changed from ", tostring(old_pid),
          " to ", tostring(new_pid), "; dropped ", dropped, " cached instance(s)")
end

local function usable(info, plugin)
  return info and info.id ~= nil and info.seq == plugin.config.__seq__
         and info.gen == generation(plugin.name)
end

local function get_instance_id(plugin)
  local key = plugin.id
  local info = running[key]
  local waited = 0
  while info and info.id == nil do
    if info.co == coroutine.running() then
      error("could not claim instance_id for " .. plugin.name .. ": recursive start", 0)
    end
    if waited >= CLAIM_TIMEOUT then
      error("Could not claim instance_id for " .. plugin.name .. " (key: " .. key .. ")", 0)
    end
    ngx.sleep(CLAIM_POLL)
    waited = waited + CLAIM_POLL
    info = running[key]
  end
  if usable(info, plugin) then
    return info.id
  end

  local old_id = info and info.id
  local gen = generation(plugin.name)
  info = { co = coroutine.running(), plugin = plugin }
  running[key] = info
  local id, err = plugin.rpc:start_instance(plugin.name, plugin.config_json)
  if id == nil then
    running[key] = nil
    ngx.log(ERR, "[minikong] starting instance: ", err)
    error(err, 0)
  end
  info.id, info.seq, info.gen, info.co = id, plugin.config.__seq__, gen, nil
  if old_id ~= nil and old_id ~= id then
    plugin.rpc:close_instance(old_id) -- result and error ignored, as in Kong
  end
  return id
end

-- Runs the PDK call the server asked for; returns the value to send (nil: Data absent).
local function call_pdk(rq, method, args)
  local fn = pdk.lookup(rq, method)
  if fn == nil then
    ngx.log(ERR, "[minikong] could not find pdk method: ", tostring(method))
    return nil
  end
  if type(args) == "table" then
    return (fn(rq, unpack(args, 1, args.n or #args))) -- n: ProtoBuf:1 args keep their nils
  end
  if args == nil then
    return (fn(rq))
  end
  return (fn(rq, args)) -- a scalar Args is the single argument
end

-- One event: HandleEvent and the Step loop. Returns true, or nil and the RPC error.
local function bridge(rq, instance_id)
  local rpc = rq.plugin.rpc
  local reply, err = rpc:call("plugin.HandleEvent", { InstanceId = instance_id,
                                                      EventName = rq.phase })
  if err then
    return nil, err
  end
  if type(reply) ~= "table" then
    error("HandleEvent answered " .. tostring(reply) .. " instead of a map", 0)
  end
  local event_id = reply.EventId
  local data = reply.Data
  while data ~= "ret" do
    if type(data) ~= "table" or type(data.Method) ~= "string" then
      -- Kong indexes Data.Method and fails with a Lua error
      error("event " .. tostring(event_id) .. ": Data is " .. tostring(data)
            .. ", not \"ret\" or {Method, Args}", 0)
    end
    local method = data.Method
    local value = call_pdk(rq, method, data.Args)
    if TERMINAL[method] then
      return true -- Kong never answers exit/error; the server has ended the event
    end
    reply, err = rpc:call(STEP_METHOD[method] or "plugin.Step",
                          { EventId = event_id, Data = value })
    if err then
      return nil, err
    end
    if type(reply) ~= "table" then
      error("Step answered " .. tostring(reply) .. " instead of a map", 0)
    end
    data = reply.Data
  end
  return true
end

--- handle_event(rq): run rq.plugin's handler for rq.phase. Lua errors propagate (the caller
--- turns them into Kong's 500); RPC errors are logged and swallowed, as Kong does (over
--- ProtoBuf:1 they answer kong.response.error(500) instead, as Kong 3.8+ does).
function _M.handle_event(rq)
  local plugin = rq.plugin
  local protobuf = plugin.rpc.protocol == PROTOBUF
  local last_err
  for _ = 0, MAX_RESTARTS do
    local instance_id = get_instance_id(plugin)
    local ok, err
    if protobuf then
      ok, err = plugin.rpc:handle_event(rq, instance_id, call_pdk)
    else
      ok, err = bridge(rq, instance_id)
    end
    if ok then
      return true
    end
    local lerr = lower(err)
    if not (find(lerr, "no plugin instance", 1, true)
            or protobuf and find(lerr, "closed", 1, true)) then
      if protobuf then
        ngx.log(ERR, "[minikong] ", plugin.name, " ", rq.phase, ": pluginserver error: ", err)
        -- raises in the log phase, as kong.response.error does there
        pdk.PDK["kong.response.error"](rq, 500)
        return nil, err
      end
      ngx.log(ERR, "[minikong] ", plugin.name, " ", rq.phase, ": ", err)
      return nil, err
    end
    ngx.log(WARN, "[minikong] ", plugin.name, ": ", err, "; restarting the instance")
    reset_plugin(plugin.name, err)
    last_err = err
  end
  error(plugin.name .. ": still \"" .. last_err .. "\" after " .. MAX_RESTARTS .. " restarts", 0)
end

return _M

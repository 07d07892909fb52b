-- minikong.rpc: a MessagePack-RPC client for one plugin server, the way Kong's mp_rpc
-- speaks MsgPack:1 (kong-protocol.md section 2):
--   * every call borrows a pooled cosocket (connect() reuses a keepalive connection of this
--     worker), writes one request [0, msgid, method, {arg}], reads until the matching
--     response [1, msgid, err, result], then puts the connection back with setkeepalive();
--   * msgids count from 1 per RPC object per worker;
--   * notifications [2, label, args] may precede a response; "serverPid" is remembered and
--     a change of pid calls on_server_pid() (Kong drops its cached instance ids then);
--   * a fresh reader per call fed by receiveany(), like Kong's unpacker.
-- Where Kong would silently lose or misread bytes, this client is stricter and loud: bytes
-- after the response are reported at [error] and the connection is closed, never pooled.
local mp = require "MessagePack"

local ngx = ngx
local tcp = ngx.socket.tcp
local type, tostring, error, pcall, setmetatable = type, tostring, error, pcall, setmetatable
local str_sub = string.sub
local mp_pack, unpack_cursor = mp.pack, mp.unpack_cursor
local ERR = ngx.ERR

local _M = {}

-- Values may carry their own packing (Kong's trick for bin bodies and empty maps).
mp.packers["function"] = function(buffer, f) f(buffer) end

local bin_packer = mp.packers["binary"]
local map_packer = mp.packers["map"]

-- bin value -> its string, for minikong.pb_rpc (ProtoBuf:1 sends raw bodies as bytes)
local bin_strings = setmetatable({}, { __mode = "k" })

--- A value that packs as msgpack bin (Kong sends raw bodies as bin since 3.0).
function _M.bin(s)
  local value = function(buffer) bin_packer(buffer, s) end
  bin_strings[value] = s
  return value
end

--- The string of a value made by bin(), or nil.
function _M.bin_string(value)
  return bin_strings[value]
end

--- An empty table packs as an empty array; this packs as an empty map.
function _M.empty_map(buffer)
  map_packer(buffer, {}, 0)
end

local Rpc = {}
Rpc.__index = Rpc

--- new(name, socket_path, opts): opts.timeout (ms, Kong leaves OpenResty's 60 s default),
--- opts.on_server_pid(rpc, old_pid, new_pid).
function _M.new(name, socket_path, opts)
  opts = opts or {}
  return setmetatable({
    name = name,
    path = "unix:" .. socket_path,
    msg_id = 0,
    server_pid = nil,
    timeout = opts.timeout or 60000,
    on_server_pid = opts.on_server_pid,
  }, Rpc)
end

-- The reader's cursor asks for bytes through underflow(e): e is the absolute index that must
-- be available. A transport failure is thrown as a table so it is told apart from bad data.
local function underflow(c, e)
  local s = str_sub(c.s, c.i)
  local need = e - c.i + 1
  local sock = c.sock
  while #s < need do
    local chunk, err = sock:receiveany(65536)
    if not chunk then
      error({ transport = err }, 0)
    end
    s = s .. chunk
  end
  c.s, c.i, c.j = s, 1, #s
end

local function read_message(cursor)
  local ok, msg = pcall(unpack_cursor, cursor)
  if ok then
    return msg
  end
  if type(msg) == "table" and msg.transport then
    return nil, msg.transport, true
  end
  return nil, "undecodable msgpack from the plugin server: " .. tostring(msg), false
end

function Rpc:notification(label, arg)
  if label == "serverPid" then
    local old = self.server_pid
    self.server_pid = arg
    if old ~= nil and old ~= arg and self.on_server_pid then
      self.on_server_pid(self, old, arg)
    end
  end
  -- unknown labels are ignored, as in Kong
end

--- call(method, arg) -> result | nil, err
--- A protocol violation Kong would assert on (wrong message type or msgid, an error that is
--- not a string) raises a Lua error, so the request fails as it would in Kong.
function Rpc:call(method, arg)
  local sock = tcp()
  sock:settimeout(self.timeout)
  local ok, err = sock:connect(self.path)
  if not ok then
    return nil, "connect " .. self.path .. ": " .. tostring(err)
  end

  local id = self.msg_id + 1
  self.msg_id = id
  local bytes
  bytes, err = sock:send(mp_pack({ 0, id, method, { arg } }))
  if not bytes then
    sock:close()
    return nil, method .. ": send: " .. tostring(err)
  end

  local cursor = { s = "", i = 1, j = 0, sock = sock, underflow = underflow }
  while true do
    local msg, rerr, transport = read_message(cursor)
    if msg == nil then
      sock:close()
      if transport then
        return nil, method .. ": " .. tostring(rerr)
      end
      error(method .. ": " .. rerr, 0)
    end
    if type(msg) ~= "table" then
      sock:close()
      error(method .. ": the plugin server sent a " .. type(msg) .. " instead of a message", 0)
    end
    if msg[1] == 2 then
      self:notification(msg[2], msg[3])
    else
      if msg[1] ~= 1 or msg[2] ~= id then
        sock:close()
        error(method .. ": expected response [1, " .. id .. ", ...], got type "
              .. tostring(msg[1]) .. " msgid " .. tostring(msg[2]), 0)
      end
      if cursor.i <= cursor.j then
        -- Kong reads each call with a fresh unpacker: these bytes would be lost or would
        -- corrupt the next call on this connection.
        ngx.log(ERR, "[minikong] ", self.name, ": ", cursor.j - cursor.i + 1,
                " unsolicited bytes after the response to ", method, "; closing the connection")
        sock:close()
      else
        sock:setkeepalive()
      end
      local rpc_err = msg[3]
      if rpc_err ~= nil then
        if type(rpc_err) ~= "string" then
          error(method .. ": the RPC error is a " .. type(rpc_err) .. ", Kong needs a string", 0)
        end
        return nil, rpc_err
      end
      return msg[4]
    end
  end
end

--- start_instance(name, config_json) -> instance id | nil, err
function Rpc:start_instance(name, config_json)
  local status, err = self:call("plugin.StartInstance", {
    Name = name,
    Config = config_json, -- cjson.encode(config) with defaults and Kong's __ keys
  })
  if type(status) ~= "table" or status.Id == nil then
    return nil, err or ("StartInstance answered " .. tostring(status))
  end
  return status.Id
end

--- close_instance(id): Kong ignores the answer.
function Rpc:close_instance(id)
  return self:call("plugin.CloseInstance", id)
end

return _M

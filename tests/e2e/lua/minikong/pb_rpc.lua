-- minikong.pb_rpc: a ProtoBuf:1 client for one plugin server, the way Kong's pb_rpc speaks it
-- (kong-protocol.md 3):
--   * frames: a 4-byte little-endian length, then the payload (minikong.pb);
--   * every command borrows a pooled cosocket and sends RpcCall{sequence, cmd_*}; sequences
--     count from 2 per RPC object per worker; Kong asserts the RpcReturn echoes it;
--   * an event runs on ONE connection in lockstep: RpcCall{cmd_handle_event}, then, until
--     the server sends an empty frame, frame(PDK name) + frame(input message) from the
--     server, answered by one frame (the output message, or an empty frame for nil/Empty);
--     the empty frame is followed by RpcReturn{sequence}; then setkeepalive();
--   * kong.response.exit is never answered: the connection is abandoned (closed here);
--   * there is no error reply: an RPC error is the connection closing, which the caller
--     sees as the error text "closed" (minikong.runner resets the instance and retries).
-- PDK names map to RPCs of `service Kong` with Kong's naming rule (3.5); arguments are
-- unwrapped and results wrapped as pb_rpc does (3.5-3.7), and the PDK itself is mini-Kong's
-- (minikong.pdk): only the encoding differs from MsgPack:1.
local pb = require "minikong.pb"
local rpc = require "minikong.rpc"

local ngx = ngx
local tcp = ngx.socket.tcp
local type, pairs, ipairs, tostring, error, pcall, setmetatable, select = type, pairs, ipairs,
      tostring, error, pcall, setmetatable, select
local gsub, lower = string.gsub, string.lower
local encode, decode, frame, frame_length = pb.encode, pb.decode, pb.frame, pb.frame_length
local empty_map, bin_string = rpc.empty_map, rpc.bin_string

local _M = {}

_M.PROTOCOL = "ProtoBuf:1"

------------------------------------------------------------------------------ service Kong

-- The RPCs of `service Kong` (kong-protocol.md 3.6): name, input, output.
local RPCS = {
  { "Client_GetIp", "Empty", "String" },
  { "Client_GetForwardedIp", "Empty", "String" },
  { "Client_GetPort", "Empty", "Int" },
  { "Client_GetForwardedPort", "Empty", "Int" },
  { "Client_GetCredential", "Empty", "AuthenticatedCredential" },
  { "Client_LoadConsumer", "ConsumerSpec", "Consumer" },
  { "Client_GetConsumer", "Empty", "Consumer" },
  { "Client_Authenticate", "AuthenticateArgs", "Empty" },
  { "Client_GetProtocol", "Bool", "String" },
  { "Ctx_SetShared", "KV", "Empty", "kong.ctx.shared.set" },
  { "Ctx_GetShared", "String", "Value", "kong.ctx.shared.get" },
  { "Ip_IsTrusted", "String", "Bool" },
  { "Log_Alert", "ListValue", "Empty" },
  { "Log_Crit", "ListValue", "Empty" },
  { "Log_Err", "ListValue", "Empty" },
  { "Log_Warn", "ListValue", "Empty" },
  { "Log_Notice", "ListValue", "Empty" },
  { "Log_Info", "ListValue", "Empty" },
  { "Log_Debug", "ListValue", "Empty" },
  { "Log_SetSerializeValue", "KV", "Empty" },
  { "Log_Serialize", "Empty", "String" },
  { "Nginx_GetVar", "String", "String" },
  { "Nginx_GetTls1VersionStr", "Empty", "String" },
  { "Nginx_SetCtx", "KV", "String" },
  { "Nginx_GetCtx", "String", "Value" },
  { "Nginx_ReqStartTime", "Empty", "Number" },
  { "Nginx_GetSubsystem", "Empty", "String" },
  { "Node_GetId", "Empty", "String" },
  { "Node_GetMemoryStats", "Empty", "MemoryStats" },
  { "Request_GetScheme", "Empty", "String" },
  { "Request_GetHost", "Empty", "String" },
  { "Request_GetPort", "Empty", "Int" },
  { "Request_GetForwardedScheme", "Empty", "String" },
  { "Request_GetForwardedHost", "Empty", "String" },
  { "Request_GetForwardedPort", "Empty", "Int" },
  { "Request_GetHttpVersion", "Empty", "Number" },
  { "Request_GetMethod", "Empty", "String" },
  { "Request_GetPath", "Empty", "String" },
  { "Request_GetPathWithQuery", "Empty", "String" },
  { "Request_GetRawQuery", "Empty", "String" },
  { "Request_GetQueryArg", "String", "String" },
  { "Request_GetQuery", "Int", "Struct" },
  { "Request_GetHeader", "String", "String" },
  { "Request_GetHeaders", "Int", "Struct" },
  { "Request_GetRawBody", "Empty", "RawBodyResult" },
  { "Request_GetUriCaptures", "Empty", "UriCapturesResult" },
  { "Response_GetStatus", "Empty", "Int" },
  { "Response_GetHeader", "String", "String" },
  { "Response_GetHeaders", "Int", "Struct" },
  { "Response_GetSource", "Empty", "String" },
  { "Response_SetStatus", "Int", "Empty" },
  { "Response_SetHeader", "KV", "Empty" },
  { "Response_AddHeader", "KV", "Empty" },
  { "Response_ClearHeader", "String", "Empty" },
  { "Response_SetHeaders", "Struct", "Empty" },
  { "Response_Exit", "ExitArgs", "Empty" },
  { "Router_GetRoute", "Empty", "Route" },
  { "Router_GetService", "Empty", "Service" },
  { "Service_SetUpstream", "String", "Bool" },
  { "Service_SetTarget", "Target", "Empty" },
  { "Service_Request_SetScheme", "String", "Empty" },
  { "Service_Request_SetPath", "String", "Empty" },
  { "Service_Request_SetRawQuery", "String", "Empty" },
  { "Service_Request_SetMethod", "String", "Empty" },
  { "Service_Request_SetQuery", "Struct", "Empty" },
  { "Service_Request_SetHeader", "KV", "Empty" },
  { "Service_Request_AddHeader", "KV", "Empty" },
  { "Service_Request_ClearHeader", "String", "Empty" },
  { "Service_Request_SetHeaders", "Struct", "Empty" },
  { "Service_Request_SetRawBody", "ByteString", "Empty" },
  { "Service_Response_GetStatus", "Empty", "Int" },
  { "Service_Response_GetHeader", "String", "String" },
  { "Service_Response_GetHeaders", "Int", "Struct" },
  { "Service_Response_GetRawBody", "Empty", "ByteString" },
}

--- Kong's Lua-style name of an RPC (3.5): "Kong.<Rpc>", "_" -> ".", "_" between a
--- lowercase letter (plus digits) and an uppercase one, lowercased.
function _M.lua_name(rpc_name)
  local name = gsub("Kong." .. rpc_name, "_", ".")
  name = gsub(name, "(%l%d*)(%u)", "%1_%2")
  return lower(name)
end

-- PDK name -> { rpc, input, output }
local SERVICE = {}
for _, row in ipairs(RPCS) do
  SERVICE[row[4] or _M.lua_name(row[1])] = { rpc = row[1], input = row[2], output = row[3] }
end
_M.SERVICE = SERVICE

------------------------------------------------------------------------------ values

-- mini-Kong's PDK returns MsgPack:1 wrappers for a few results (minikong.rpc's bin and
-- empty_map); over ProtoBuf:1 they are plain values again.
local function plain(value)
  if value == empty_map then
    return {}
  end
  if type(value) == "function" then
    local s = bin_string(value)
    if s == nil then
      error("pb_rpc: a PDK result is a function that is not a raw body", 0)
    end
    return s
  end
  return value
end

local function is_array(t)
  local n = #t
  if n == 0 then
    return false
  end
  local count = 0
  for _ in pairs(t) do
    count = count + 1
  end
  return count == n
end

local to_value

local function to_struct(t)
  local fields = {}
  for k, v in pairs(t) do
    fields[tostring(k)] = to_value(v)
  end
  return { fields = fields }
end

-- A Lua value as a google.protobuf.Value table. nil travels as null_value = 1, as Kong's
-- pb_rpc writes it (an out-of-range NullValue: the server must read it as null).
function to_value(v)
  v = plain(v)
  local t = type(v)
  if v == nil or v == ngx.null then
    return { null_value = 1 }
  elseif t == "boolean" then
    return { bool_value = v }
  elseif t == "number" then
    return { number_value = v }
  elseif t == "string" then
    return { string_value = v }
  elseif t == "table" then
    if is_array(v) then
      local values = {}
      for i = 1, #v do
        values[i] = to_value(v[i])
      end
      return { list_value = { values = values } }
    end
    return { struct_value = to_struct(v) }
  end
  error("pb_rpc: cannot send a " .. t .. " as a google.protobuf.Value", 0)
end

local from_struct

-- A google.protobuf.Value as Kong's Lua sees it: a false bool reads as nil (Kong's
-- `bool_value or string_value or number_value or null_value`), a null as "NULL_VALUE".
local function from_value(v)
  if v == nil then
    return nil
  end
  if v.list_value then
    local out = {}
    for i, item in ipairs(v.list_value.values) do
      out[i] = from_value(item)
    end
    return out
  end
  if v.struct_value then
    return from_struct(v.struct_value)
  end
  return v.bool_value or v.string_value or v.number_value or v.null_value
end

function from_struct(s)
  local out = {}
  for k, v in pairs(s.fields) do
    out[k] = from_value(v)
  end
  return out
end

-- Header and query maps reach mini-Kong's PDK answers as MsgPack:1 multimaps (every value
-- an array, a query flag an empty array); over ProtoBuf:1 Kong sends nginx's own shape: a
-- string per single value, a list for repeated ones, true for a flag (3.5).
local MULTIMAP = {
  ["kong.request.get_query"] = true,
  ["kong.request.get_headers"] = true,
  ["kong.response.get_headers"] = true,
  ["kong.service.response.get_headers"] = true,
}

local function unmultimap(t)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "table" and #v == 0 then
      out[k] = true
    elseif type(v) == "table" and #v == 1 then
      out[k] = v[1]
    else
      out[k] = v
    end
  end
  return out
end

------------------------------------------------------------------------------ conversions

local function args_of(...)
  return { n = select("#", ...), ... }
end

-- The server's input message as the positional arguments of the PDK function (3.5).
local UNWRAP = {
  Empty = function() return args_of() end,
  Value = function(m) return args_of(from_value(m)) end,
  ListValue = function(m)
    local out = { n = #m.values }
    for i, v in ipairs(m.values) do
      out[i] = from_value(v)
    end
    return out
  end,
  Struct = function(m) return args_of(from_struct(m)) end,
  KV = function(m) return args_of(m.k, from_value(m.v)) end,
  Bool = function(m) return args_of(m.v) end,
  Int = function(m) return args_of(m.v) end,
  Number = function(m) return args_of(m.v) end,
  String = function(m) return args_of(m.v) end,
  ByteString = function(m) return args_of(m.v) end,
  ExitArgs = function(m)
    return args_of(m.status, m.body, m.headers and from_struct(m.headers) or nil)
  end,
  Target = function(m) return args_of(m.host, m.port) end,
  ConsumerSpec = function(m) return args_of(m.id, m.by_username) end,
  AuthenticateArgs = function(m) return args_of(m.consumer, m.credential) end,
}

--- unwrap(input_type, bytes) -> args (a table with n)
function _M.unwrap(input, bytes)
  local m = decode(input, bytes)
  local unwrap = UNWRAP[input]
  if unwrap then
    return unwrap(m)
  end
  return args_of(m)
end

-- Kong's answer for a PDK result: the output message, "" for nil (3.3).
local WRAP = {
  Empty = function() return "" end,
  Value = function(v) return encode("Value", to_value(v)) end,
  Struct = function(v, method)
    if MULTIMAP[method] then
      v = unmultimap(v)
    end
    return encode("Struct", to_struct(v))
  end,
  RawBodyResult = function(v)
    if type(v) == "string" then
      return encode("RawBodyResult", { content = v })
    end
    local path = ngx.req.get_body_file()
    if path then
      return encode("RawBodyResult", { body_filepath = path })
    end
    return encode("RawBodyResult", { error = "could not read the request body" })
  end,
  UriCapturesResult = function(v)
    return encode("UriCapturesResult", { unnamed = plain(v.unnamed) or {},
                                         named = plain(v.named) or {} })
  end,
}
for _, scalar in ipairs({ "Bool", "Int", "Number", "String", "ByteString" }) do
  WRAP[scalar] = function(v) return encode(scalar, { v = v }) end
end

--- wrap(output_type, value, method) -> the answer frame's payload
function _M.wrap(output, value, method)
  value = plain(value)
  local wrap = WRAP[output]
  if output ~= "Value" and output ~= "Empty" and output ~= "RawBodyResult" and value == nil then
    return ""
  end
  if wrap then
    return wrap(value, method)
  end
  return encode(output, value) -- entities: lua-protobuf takes the fields the message has
end

--- The frame of RpcCall{sequence, <field> = cmd} (what Kong sends for a command).
function _M.call_frame(sequence, field, cmd)
  return frame(encode("RpcCall", { sequence = sequence, [field] = cmd }))
end

--- The frame Kong answers a PDK call with.
function _M.answer_frame(output, value, method)
  return frame(_M.wrap(output, value, method))
end

------------------------------------------------------------------------------ the client

local Rpc = {}
Rpc.__index = Rpc

--- new(name, socket_path, opts): opts.timeout (ms; Kong leaves OpenResty's 60 s default).
function _M.new(name, socket_path, opts)
  opts = opts or {}
  return setmetatable({
    name = name,
    path = "unix:" .. socket_path,
    sequence = 1, -- Kong's first RpcCall has sequence 2
    timeout = opts.timeout or 60000,
    protocol = _M.PROTOCOL,
  }, Rpc)
end

function Rpc:connect()
  local sock = tcp()
  sock:settimeout(self.timeout)
  local ok, err = sock:connect(self.path)
  if not ok then
    return nil, "connect " .. self.path .. ": " .. tostring(err)
  end
  return sock
end

-- The connection cannot go on: closes it and returns nil, msg (an RPC error).
local function fail(sock, msg)
  sock:close()
  return nil, msg
end

-- The connection cannot go on: closes it and raises msg (a Lua error, as in Kong).
local function raise(sock, msg)
  sock:close()
  error(msg, 0)
end

local function read_frame(sock)
  local header, err = sock:receive(4)
  if not header then
    return nil, err
  end
  local n = frame_length(header)
  if n == 0 then
    return ""
  end
  local payload
  payload, err = sock:receive(n)
  if not payload then
    return nil, err
  end
  return payload
end

-- Decodes what the server sent; a malformed message is a Lua error, as in Kong.
local function decode_or_raise(sock, what, type_name, payload)
  local ok, m = pcall(decode, type_name, payload)
  if not ok then
    raise(sock, what .. ": the plugin server sent a malformed " .. type_name .. ": "
          .. tostring(m))
  end
  return m
end

-- Sends RpcCall{sequence, <field> = cmd}; returns the socket and the sequence, or nil and
-- the error.
function Rpc:send_call(field, cmd, what)
  local sock, err = self:connect()
  if not sock then
    return nil, err
  end
  local sequence = self.sequence + 1
  self.sequence = sequence
  local bytes
  bytes, err = sock:send(_M.call_frame(sequence, field, cmd))
  if not bytes then
    return fail(sock, what .. ": send: " .. tostring(err))
  end
  return sock, sequence
end

local function read_return(sock, sequence, what)
  local payload, err = read_frame(sock)
  if not payload then
    return fail(sock, what .. ": " .. tostring(err))
  end
  local ret = decode_or_raise(sock, what, "RpcReturn", payload)
  if ret.sequence ~= sequence then
    raise(sock, what .. ": RpcReturn sequence " .. tostring(ret.sequence) .. ", expected "
          .. sequence) -- Kong asserts this
  end
  return ret
end

-- One command: RpcCall, its RpcReturn, the connection back to the pool. -> ret | nil, err
function Rpc:command(field, cmd, what)
  local sock, seq_or_err = self:send_call(field, cmd, what)
  if not sock then
    return nil, seq_or_err
  end
  local ret, err = read_return(sock, seq_or_err, what)
  if not ret then
    return nil, err
  end
  sock:setkeepalive()
  return ret
end

--- start_instance(name, config_json) -> instance id | nil, err
function Rpc:start_instance(name, config_json)
  local ret, err = self:command("cmd_start_instance", { name = name, config = config_json },
                                "StartInstance")
  if not ret then
    return nil, err
  end
  local status = ret.instance_status
  if not status then
    return nil, "StartInstance: the RpcReturn has no instance_status"
  end
  return status.instance_id
end

--- close_instance(id): Kong ignores the answer (and a closed connection).
function Rpc:close_instance(id)
  return self:command("cmd_close_instance", { instance_id = id }, "CloseInstance")
end

--- handle_event(rq, instance_id, call_pdk) -> true | nil, err
--- call_pdk(rq, method, args) runs one PDK function and returns its first value. A Lua
--- error (a refused PDK call, a protocol violation) propagates after the socket is closed.
function Rpc:handle_event(rq, instance_id, call_pdk)
  local sock, seq_or_err = self:send_call("cmd_handle_event",
                                          { instance_id = instance_id, event_name = rq.phase },
                                          "HandleEvent")
  if not sock then
    return nil, seq_or_err
  end
  while true do
    local name, err = read_frame(sock)
    if not name then
      return fail(sock, "HandleEvent: " .. tostring(err))
    end
    if name == "" then -- the end of the event
      local ret
      ret, err = read_return(sock, seq_or_err, "HandleEvent")
      if not ret then
        return nil, err
      end
      sock:setkeepalive()
      return true
    end
    local payload
    payload, err = read_frame(sock)
    if not payload then
      return fail(sock, name .. ": " .. tostring(err))
    end
    local entry = SERVICE[name]
    if not entry then
      return fail(sock, 'method "' .. name .. '" not found')
    end
    local ok, args = pcall(_M.unwrap, entry.input, payload)
    if not ok then
      raise(sock, name .. ": the plugin server sent a malformed " .. entry.input .. ": "
            .. tostring(args))
    end
    local value
    ok, value = pcall(call_pdk, rq, name, args)
    if not ok then
      raise(sock, value)
    end
    if name == "kong.response.exit" then
      sock:close() -- never answered: Kong abandons the connection
      return true
    end
    local answer
    ok, answer = pcall(_M.answer_frame, entry.output, value, name)
    if not ok then
      raise(sock, name .. ": " .. tostring(answer))
    end
    local bytes
    bytes, err = sock:send(answer)
    if not bytes then
      return fail(sock, name .. ": send: " .. tostring(err))
    end
  end
end

return _M

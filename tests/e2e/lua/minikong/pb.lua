-- minikong.pb: the protobuf wire format for the messages of Kong's ProtoBuf:1 protocol,
-- written from kong-protocol.md 3.4 (kong_plugin_protocol's field tables) and the protobuf
-- encoding rules (Debian ships no lua-protobuf).
--
--   encode(type, table) -> bytes        decode(type, bytes) -> table
--
-- Types are the message names of pluginsocket.proto without their package ("RpcCall",
-- "KV", ...) plus google.protobuf's "Empty", "Value", "Struct" and "ListValue".
-- What the encoder does, as lua-protobuf does it for Kong:
--   * fields in field-number order; nil fields are left out;
--   * proto3 scalars with their zero value (0, "") are left out, but a `false` bool is
--     written explicitly (kong-protocol.md 3.7); members of a oneof are always written;
--   * repeated strings/bytes/messages one field each; maps as repeated entry messages
--     {1 key, 2 value} (keys sorted, so the bytes are reproducible), empty keys and values
--     left out of the entry;
--   * int32 and enum values that are negative take 10 bytes (64-bit two's complement);
--     doubles are 8 little-endian bytes (LuaJIT's FFI);
--   * a number given for a string field is written as its text (lua_tolstring does this).
-- The decoder gives every absent scalar (not in a oneof) its zero value, as lua-protobuf
-- does (so an empty Int frame reads as 0, 3.7), leaves absent messages and oneof members
-- nil, reads enums as their names ("NULL_VALUE"), accepts packed and unpacked repeated
-- numbers, and skips unknown fields. Malformed input raises a Lua error.
local ffi = require "ffi"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring,
                                                      tonumber, error
local byte, char, sub = string.byte, string.char, string.sub
local concat, sort = table.concat, table.sort
local floor = math.floor

local _M = {}

local TWO32 = 4294967296
local TWO31 = 2147483648

------------------------------------------------------------------------------ schema

-- scalar type -> wire type
local WIRE = {
  int32 = 0, int64 = 0, bool = 0, enum = 0,
  double = 1,
  string = 2, bytes = 2,
}

local ENUMS = {
  NullValue = { [0] = "NULL_VALUE", NULL_VALUE = 0 },
}

local TYPES = {}

-- message(name, { {number, field, type [, label]} ... }); label: "repeated", "oneof" or
-- "map" (then type is { key_type, value_type }). A type that is not a scalar is a message
-- name, or "enum:<Enum>".
local function message(name, fields)
  local by_number = {}
  sort(fields, function(a, b) return a[1] < b[1] end)
  local list = {}
  for i, f in ipairs(fields) do
    local spec = { number = f[1], name = f[2], type = f[3], label = f[4] }
    if spec.label == "map" then
      local entry = name .. "." .. spec.name .. "Entry"
      message(entry, { { 1, "key", f[3][1] }, { 2, "value", f[3][2] } })
      TYPES[entry].map_entry = true
      spec.type = entry
    end
    local t = spec.type
    if type(t) == "string" and sub(t, 1, 5) == "enum:" then
      spec.enum = ENUMS[sub(t, 6)]
      spec.type = "enum"
    end
    spec.scalar = WIRE[spec.type] ~= nil
    list[i] = spec
    by_number[spec.number] = spec
  end
  TYPES[name] = { name = name, fields = list, by_number = by_number }
end

-- google/protobuf/empty.proto and struct.proto
message("Empty", {})
message("Value", {
  { 1, "null_value", "enum:NullValue", "oneof" },
  { 2, "number_value", "double", "oneof" },
  { 3, "string_value", "string", "oneof" },
  { 4, "bool_value", "bool", "oneof" },
  { 5, "struct_value", "Struct", "oneof" },
  { 6, "list_value", "ListValue", "oneof" },
})
message("Struct", { { 1, "fields", { "string", "Value" }, "map" } })
message("ListValue", { { 1, "values", "Value", "repeated" } })

-- kong_plugin_protocol: the RPC envelope (kong-protocol.md 3.4)
message("CmdGetPluginNames", {})
message("CmdGetPluginInfo", { { 1, "name", "string" } })
message("CmdStartInstance", { { 1, "name", "string" }, { 2, "config", "bytes" } })
message("CmdGetInstanceStatus", { { 1, "instance_id", "int32" } })
message("CmdCloseInstance", { { 1, "instance_id", "int32" } })
message("CmdHandleEvent", { { 1, "instance_id", "int32" }, { 2, "event_name", "string" } })
message("RpcCall", {
  { 1, "sequence", "int64" },
  { 31, "cmd_get_plugin_names", "CmdGetPluginNames", "oneof" },
  { 32, "cmd_get_plugin_info", "CmdGetPluginInfo", "oneof" },
  { 33, "cmd_start_instance", "CmdStartInstance", "oneof" },
  { 34, "cmd_get_instance_status", "CmdGetInstanceStatus", "oneof" },
  { 35, "cmd_close_instance", "CmdCloseInstance", "oneof" },
  { 36, "cmd_handle_event", "CmdHandleEvent", "oneof" },
})
message("PluginNames", { { 1, "names", "string", "repeated" } })
message("PluginInfo", {
  { 1, "name", "string" }, { 2, "updated_at", "int64" }, { 3, "loaded_at", "int64" },
  { 4, "phases", "string", "repeated" }, { 5, "version", "string" },
  { 6, "priority", "int32" }, { 7, "schema", "string" },
})
message("InstanceStatus", {
  { 1, "name", "string" }, { 2, "instance_id", "int32" }, { 3, "config", "Value" },
  { 4, "started_at", "int64" },
})
message("RpcReturn", {
  { 1, "sequence", "int64" },
  { 31, "plugin_names", "PluginNames", "oneof" },
  { 32, "plugin_info", "PluginInfo", "oneof" },
  { 33, "instance_status", "InstanceStatus", "oneof" },
})

-- kong_plugin_protocol: PDK payloads
message("KV", { { 1, "k", "string" }, { 2, "v", "Value" } })
message("Bool", { { 1, "v", "bool" } })
message("Int", { { 1, "v", "int32" } })
message("Number", { { 1, "v", "double" } })
message("String", { { 1, "v", "string" } })
message("ByteString", { { 1, "v", "bytes" } })
message("ExitArgs", {
  { 1, "status", "int32" }, { 2, "body", "bytes" }, { 3, "headers", "Struct" },
})
message("ServiceKey", { { 1, "id", "string" } })
message("CertificateKey", { { 1, "id", "string" } })
message("RawBodyResult", {
  { 1, "content", "bytes", "oneof" },
  { 2, "body_filepath", "string", "oneof" },
  { 3, "error", "string", "oneof" },
})
message("UriCapturesResult", {
  { 1, "unnamed", "bytes", "repeated" },
  { 2, "named", { "string", "bytes" }, "map" },
})
message("Route", {
  { 1, "id", "string" }, { 2, "created_at", "int64" }, { 3, "updated_at", "int64" },
  { 4, "name", "string" }, { 5, "protocols", "string", "repeated" },
  { 6, "methods", "string", "repeated" }, { 7, "hosts", "string", "repeated" },
  { 8, "paths", "string", "repeated" }, { 9, "headers", "string", "repeated" },
  { 10, "https_redirect_status_code", "int32" }, { 11, "regex_priority", "int32" },
  { 12, "strip_path", "bool" }, { 13, "preserve_host", "bool" },
  { 14, "snis", "string", "repeated" }, { 15, "sources", "string", "repeated" },
  { 16, "destinations", "string", "repeated" }, { 17, "tags", "string", "repeated" },
  { 18, "service", "ServiceKey" },
})
message("Service", {
  { 1, "id", "string" }, { 2, "created_at", "int64" }, { 3, "updated_at", "int64" },
  { 4, "name", "string" }, { 5, "retries", "int32" }, { 6, "protocol", "string" },
  { 7, "host", "string" }, { 8, "port", "int32" }, { 9, "path", "string" },
  { 10, "connect_timeout", "int32" }, { 11, "write_timeout", "int32" },
  { 12, "read_timeout", "int32" }, { 13, "tags", "string", "repeated" },
  { 14, "client_certificate", "CertificateKey" },
})
message("Target", { { 1, "host", "string" }, { 2, "port", "int32" } })
message("ConsumerSpec", { { 1, "id", "string" }, { 2, "by_username", "bool" } })
message("Consumer", {
  { 1, "id", "string" }, { 2, "created_at", "int64" }, { 3, "username", "string" },
  { 4, "custom_id", "string" }, { 5, "tags", "string", "repeated" },
})
message("AuthenticatedCredential", { { 1, "id", "string" }, { 2, "consumer_id", "string" } })
message("AuthenticateArgs", {
  { 1, "consumer", "Consumer" }, { 2, "credential", "AuthenticatedCredential" },
})
message("MemoryStats.LuaSharedDicts.DictStats", {
  { 1, "allocated_slabs", "int64" }, { 2, "capacity", "int64" },
})
message("MemoryStats.LuaSharedDicts", {
  { 1, "kong", "MemoryStats.LuaSharedDicts.DictStats" },
  { 2, "kong_db_cache", "MemoryStats.LuaSharedDicts.DictStats" },
})
message("MemoryStats.WorkerLuaVm", { { 1, "http_allocated_gc", "int64" }, { 2, "pid", "int64" } })
message("MemoryStats", {
  { 1, "lua_shared_dicts", "MemoryStats.LuaSharedDicts" },
  { 2, "workers_lua_vms", "MemoryStats.WorkerLuaVm", "repeated" },
})

------------------------------------------------------------------------------ encoding

local double_box = ffi.new("double[1]")

-- A varint from a 64-bit value given as two unsigned 32-bit halves (exact doubles).
local function varint64(out, hi, lo)
  while hi > 0 or lo >= 128 do
    out[#out + 1] = char(lo % 128 + 128)
    lo = floor(lo / 128) + (hi % 128) * 33554432 -- 2^25: hi's low 7 bits move into lo
    hi = floor(hi / 128)
  end
  out[#out + 1] = char(lo)
end

local function varint(out, n)
  if n ~= floor(n) then
    error("pb: " .. tostring(n) .. " is not an integer", 0)
  end
  if n >= 0 then
    if n < 128 then
      out[#out + 1] = char(n)
      return
    end
    return varint64(out, floor(n / TWO32), n % TWO32)
  end
  -- two's complement on 64 bits: hi and lo of 2^64 + n (both exact for |n| < 2^53)
  return varint64(out, floor(n / TWO32) % TWO32, n % TWO32)
end

local function tag(out, number, wire)
  varint(out, number * 8 + wire)
end

local encode_message

local function encode_scalar(out, spec, value, where)
  local t = spec.type
  if t == "string" or t == "bytes" then
    local vt = type(value)
    if vt == "number" then
      value = tostring(value)
    elseif vt ~= "string" then
      error("pb: " .. where .. ": expected a string, got " .. vt, 0)
    end
    tag(out, spec.number, 2)
    varint(out, #value)
    out[#out + 1] = value
  elseif t == "bool" then
    if type(value) ~= "boolean" then
      error("pb: " .. where .. ": expected a boolean, got " .. type(value), 0)
    end
    tag(out, spec.number, 0)
    out[#out + 1] = value and "\1" or "\0"
  elseif t == "double" then
    if type(value) ~= "number" then
      error("pb: " .. where .. ": expected a number, got " .. type(value), 0)
    end
    tag(out, spec.number, 1)
    double_box[0] = value
    out[#out + 1] = ffi.string(double_box, 8) -- x86-64 and arm64 are little-endian
  else -- varint types
    if t == "enum" and type(value) == "string" then
      local n = spec.enum[value]
      if n == nil then
        error("pb: " .. where .. ": unknown enum name " .. value, 0)
      end
      value = n
    end
    if type(value) ~= "number" then
      error("pb: " .. where .. ": expected an integer, got " .. type(value), 0)
    end
    if (t == "int32" or t == "enum") and (value >= TWO31 or value < -TWO31) then
      error("pb: " .. where .. ": " .. value .. " does not fit in an int32", 0)
    end
    tag(out, spec.number, 0)
    varint(out, value)
  end
end

local function is_zero(spec, value)
  local t = spec.type
  if t == "string" or t == "bytes" then
    return value == ""
  elseif t == "bool" then
    return false -- lua-protobuf writes false explicitly
  end
  return value == 0
end

local function encode_embedded(out, number, type_name, value, where)
  local bytes = encode_message(type_name, value, where)
  tag(out, number, 2)
  varint(out, #bytes)
  out[#out + 1] = bytes
end

local function encode_map(out, spec, value, where)
  if type(value) ~= "table" then
    error("pb: " .. where .. ": expected a table for a map, got " .. type(value), 0)
  end
  local entry = TYPES[spec.type]
  local key_spec, value_spec = entry.by_number[1], entry.by_number[2]
  local keys = {}
  for k in pairs(value) do
    keys[#keys + 1] = k
  end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local item = {}
    local v = value[k]
    local kw = where .. "[" .. tostring(k) .. "]"
    if not is_zero(key_spec, k) then
      encode_scalar(item, key_spec, k, kw)
    end
    if value_spec.scalar then
      if not is_zero(value_spec, v) then
        encode_scalar(item, value_spec, v, kw)
      end
    else
      encode_embedded(item, 2, value_spec.type, v, kw)
    end
    local bytes = concat(item)
    tag(out, spec.number, 2)
    varint(out, #bytes)
    out[#out + 1] = bytes
  end
end

function encode_message(type_name, value, where)
  local desc = TYPES[type_name]
  if not desc then
    error("pb: unknown message type " .. tostring(type_name), 0)
  end
  where = where or type_name
  if type(value) ~= "table" then
    error("pb: " .. where .. ": expected a table, got " .. type(value), 0)
  end
  local out = {}
  for _, spec in ipairs(desc.fields) do
    local v = value[spec.name]
    if v ~= nil then
      local fw = where .. "." .. spec.name
      if spec.label == "map" then
        encode_map(out, spec, v, fw)
      elseif spec.label == "repeated" then
        if type(v) ~= "table" then
          error("pb: " .. fw .. ": expected an array, got " .. type(v), 0)
        end
        for i = 1, #v do
          if spec.scalar then
            if WIRE[spec.type] ~= 2 then
              error("pb: " .. fw .. ": packed repeated numbers are not needed here", 0)
            end
            encode_scalar(out, spec, v[i], fw)
          else
            encode_embedded(out, spec.number, spec.type, v[i], fw)
          end
        end
      elseif spec.scalar then
        if spec.label == "oneof" or not is_zero(spec, v) then
          encode_scalar(out, spec, v, fw)
        end
      else
        encode_embedded(out, spec.number, spec.type, v, fw)
      end
    end
  end
  return concat(out)
end

--- encode(type, table) -> the message's bytes
function _M.encode(type_name, value)
  return encode_message(type_name, value)
end

------------------------------------------------------------------------------ decoding

-- Reads a varint at i; returns hi, lo (unsigned 32-bit halves) and the next index.
local function read_varint(s, i, n)
  local hi, lo, shift = 0, 0, 0
  while true do
    if i > n then
      error("pb: truncated varint", 0)
    end
    local b = byte(s, i)
    i = i + 1
    local c = b % 128
    if shift < 28 then
      lo = lo + c * 2 ^ shift
    elseif shift == 28 then
      lo = lo + (c % 16) * 268435456 -- 2^28
      hi = hi + floor(c / 16)
    elseif shift < 63 then
      hi = hi + c * 2 ^ (shift - 32)
    else
      hi = hi + (c % 2) * TWO31
    end
    if b < 128 then
      return hi % TWO32, lo, i
    end
    shift = shift + 7
    if shift > 63 then
      error("pb: varint longer than 10 bytes", 0)
    end
  end
end

local function as_number(spec_type, hi, lo)
  if spec_type == "bool" then
    return hi ~= 0 or lo ~= 0
  elseif spec_type == "int32" or spec_type == "enum" then
    return lo >= TWO31 and lo - TWO32 or lo -- the low 32 bits, signed
  elseif spec_type == "int64" and hi >= TWO31 then
    return (hi - TWO32) * TWO32 + lo
  end
  return hi * TWO32 + lo
end

local ZERO = { string = "", bytes = "", bool = false, double = 0, int32 = 0, int64 = 0,
               enum = 0 }

local decode_message

local function decode_scalar(spec, s, i, n, wire)
  local t = spec.type
  if wire == 0 then
    local hi, lo
    hi, lo, i = read_varint(s, i, n)
    local v = as_number(t, hi, lo)
    if t == "enum" then
      v = spec.enum[v] or v
    end
    return v, i
  elseif wire == 1 then
    if i + 7 > n then
      error("pb: truncated fixed64", 0)
    end
    ffi.copy(double_box, sub(s, i, i + 7), 8)
    return tonumber(double_box[0]), i + 8
  end
  error("pb: unexpected wire type " .. wire .. " for " .. spec.name, 0)
end

-- Reads the length of a length-delimited field at i; returns the index of its first byte
-- and of its last one, which must not be past j.
local function read_length(s, i, j, where)
  local _, len
  _, len, i = read_varint(s, i, j)
  local last = i + len - 1
  if last > j then
    error("pb: " .. where .. ": truncated field", 0)
  end
  return i, last
end

-- Stores a decoded value: appended to its list if the field is repeated, else set.
local function store(out, spec, v)
  if spec.label == "repeated" then
    local list = out[spec.name] or {}
    list[#list + 1] = v
    out[spec.name] = list
  else
    out[spec.name] = v
  end
end

local function skip(s, i, n, wire)
  if wire == 0 then
    local _
    _, _, i = read_varint(s, i, n)
    return i
  elseif wire == 1 then
    return i + 8
  elseif wire == 5 then
    return i + 4
  elseif wire == 2 then
    local hi, len
    hi, len, i = read_varint(s, i, n)
    return i + hi * TWO32 + len
  end
  error("pb: unsupported wire type " .. wire, 0)
end

function decode_message(type_name, s, i, j)
  local desc = TYPES[type_name]
  local out = {}
  while i <= j do
    local hi, key
    hi, key, i = read_varint(s, i, j)
    local number, wire = floor(key / 8), key % 8
    local spec = desc.by_number[number]
    if not spec then
      i = skip(s, i, j, wire)
    elseif wire == 2 and not (spec.scalar and WIRE[spec.type] ~= 2) then
      local last
      i, last = read_length(s, i, j, type_name .. "." .. spec.name)
      local v
      if spec.scalar then
        v = sub(s, i, last)
      else
        v = decode_message(spec.type, s, i, last)
      end
      i = last + 1
      if spec.label == "map" then
        local map = out[spec.name] or {}
        map[v.key] = v.value
        out[spec.name] = map
      else
        store(out, spec, v)
      end
    elseif wire == 2 and spec.label == "repeated" then -- packed repeated numbers
      local last
      i, last = read_length(s, i, j, type_name .. "." .. spec.name)
      local list = out[spec.name] or {}
      while i <= last do
        list[#list + 1], i = decode_scalar(spec, s, i, last, WIRE[spec.type])
      end
      out[spec.name] = list
    else
      if not spec.scalar or wire ~= WIRE[spec.type] then
        error("pb: " .. type_name .. "." .. spec.name .. ": wire type " .. wire
              .. " does not fit its type " .. spec.type, 0)
      end
      local v
      v, i = decode_scalar(spec, s, i, j, wire)
      store(out, spec, v)
    end
  end
  if i ~= j + 1 then
    error("pb: " .. type_name .. ": a field runs past the end of the message", 0)
  end
  for _, spec in ipairs(desc.fields) do
    if out[spec.name] == nil then
      if spec.label == "map" or spec.label == "repeated" then
        out[spec.name] = {}
      elseif spec.scalar and spec.label ~= "oneof" then
        out[spec.name] = ZERO[spec.type]
      end
    end
  end
  if desc.map_entry then
    local key_spec = desc.by_number[1]
    if out.key == nil then
      out.key = ZERO[key_spec.type]
    end
  end
  return out
end

--- decode(type, bytes) -> table (raises a Lua error on malformed input)
function _M.decode(type_name, s)
  if not TYPES[type_name] then
    error("pb: unknown message type " .. tostring(type_name), 0)
  end
  return decode_message(type_name, s, 1, #s)
end

------------------------------------------------------------------------------ frames

--- A frame: the payload's length as 4 little-endian bytes, then the payload.
function _M.frame(payload)
  local n = #payload
  return char(n % 256, floor(n / 256) % 256, floor(n / 65536) % 256,
              floor(n / 16777216) % 256) .. payload
end

--- The length a 4-byte frame header announces.
function _M.frame_length(header)
  local a, b, c, d = byte(header, 1, 4)
  return a + b * 256 + c * 65536 + d * 16777216
end

--- Lowercase hex of a string (tests and logs).
function _M.hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(byte(ch)) end))
end

return _M

-- minikong.selftest: runs minikong.pb / minikong.pb_rpc on cases given as JSON and writes
-- what they produced as JSON, so a test can compare them with known bytes (kong-protocol.md
-- 7.3) and with another protobuf implementation, without any plugin server involved.
--
-- Input:  { "cases": [ { "name": ..., "op": ..., ... } ] }, ops:
--   call    {sequence, command, message}  -> hex of pb_rpc.call_frame (what Kong sends)
--   answer  {output, method, value?}      -> hex of pb_rpc.answer_frame (Kong's PDK answer)
--   encode  {type, message}               -> hex of pb.frame(pb.encode(type, message))
--   decode  {type, hex}                   -> the decoded table
--   unwrap  {input, hex}                  -> the PDK arguments pb_rpc makes of it (an array)
-- Strings that are not printable ASCII come out as {"$hex": ...}; the same form is accepted
-- in inputs for bytes JSON cannot carry. Output: { name: result | {"error": text} }.
-- Run once in nginx's init phase (Debian has no standalone LuaJIT): see minikong.py.
local cjson = require "cjson"
local pb = require "minikong.pb"
local pb_rpc = require "minikong.pb_rpc"

local type, pairs, tostring, pcall, error = type, pairs, tostring, pcall, error
local char, find = string.char, string.find

local _M = {}

local function unhex(s)
  if #s % 2 ~= 0 or find(s, "[^%x]") then
    error("selftest: bad hex " .. s, 0)
  end
  return (s:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

local function from_json(v)
  if type(v) ~= "table" then
    return v
  end
  if v["$hex"] then
    return unhex(v["$hex"])
  end
  local out = {}
  for k, item in pairs(v) do
    out[k] = from_json(item)
  end
  return out
end

local function to_json(v)
  if type(v) == "string" then
    if find(v, "[^\32-\126]") then
      return { ["$hex"] = pb.hex(v) }
    end
    return v
  end
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, item in pairs(v) do
    out[k] = to_json(item)
  end
  return out
end

local OPS = {
  call = function(c)
    return pb.hex(pb_rpc.call_frame(c.sequence, c.command, from_json(c.message)))
  end,
  answer = function(c)
    return pb.hex(pb_rpc.answer_frame(c.output, from_json(c.value), c.method))
  end,
  encode = function(c)
    return pb.hex(pb.frame(pb.encode(c.type, from_json(c.message))))
  end,
  decode = function(c)
    return to_json(pb.decode(c.type, unhex(c.hex)))
  end,
  unwrap = function(c)
    local args = pb_rpc.unwrap(c.input, unhex(c.hex))
    local list = {}
    for i = 1, args.n do
      local a = args[i]
      if a == nil then
        a = cjson.null
      end
      list[i] = to_json(a)
    end
    return list
  end,
}

--- run(input_path, output_path)
function _M.run(input_path, output_path)
  local f = assert(io.open(input_path, "rb"))
  local input = cjson.decode(f:read("*a"))
  f:close()
  local results = {}
  for _, case in ipairs(input.cases) do
    local op = OPS[case.op]
    local ok, result
    if op then
      ok, result = pcall(op, case)
    else
      ok, result = false, "unknown op " .. tostring(case.op)
    end
    results[case.name] = ok and result or { error = tostring(result) }
  end
  f = assert(io.open(output_path, "wb"))
  f:write(cjson.encode(results))
  f:close()
end

return _M

-- Event-time-safe write of feature rows into Feast's Redis layout, atomically per script call.
--
-- KEYS[i]  entity hash key of row i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV[1]  key TTL in seconds, 0 for none
-- ARGV[2]  timestamp field name, "_ts:<view>"
-- then, for each row in KEYS order:
--   seconds, nanos, serialized Timestamp, number of feature fields n, then n field/value pairs
--
-- A row is written only when the stored timestamp is absent (or the zero epoch, as in Feast)
-- or strictly older than the row's; rows of one call are applied in order, so the newest of
-- several rows for one key wins. Returns the number of rows written.
-- Errors name the row (1-based index into KEYS) and never alter that row's stored data.

local unpack_ = unpack or table.unpack
local ttl = tonumber(ARGV[1])
local ts_field = ARGV[2]
local MAX_PAIRS = 1000 -- keep HSET's argument list well inside Lua's C stack

local function parse_timestamp(raw)
  -- google.protobuf.Timestamp: field 1 seconds (varint, tag 0x08), field 2 nanos (tag 0x10).
  local seconds, nanos = 0, 0
  local i, n = 1, #raw
  while i <= n do
    local tag = string.byte(raw, i)
    i = i + 1
    if tag ~= 8 and tag ~= 16 then
      return nil
    end
    local value, scale, byte = 0, 1, 128
    while byte >= 128 do
      if i > n then
        return nil
      end
      byte = string.byte(raw, i)
      i = i + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    if tag == 8 then
      if value >= 9223372036854775808 then
        value = value - 18446744073709551616 -- negative seconds (before 1970)
      end
      seconds = value
    else
      nanos = value
    end
  end
  return seconds, nanos
end

local written = 0
local pos = 3
for row = 1, #KEYS do
  local key = KEYS[row]
  local seconds = tonumber(ARGV[pos])
  local nanos = tonumber(ARGV[pos + 1])
  local stamp = ARGV[pos + 2]
  local n_fields = tonumber(ARGV[pos + 3])
  local first = pos + 4
  pos = first + 2 * n_fields

  local stored = redis.pcall('HGET', key, ts_field)
  if type(stored) == 'table' and stored.err then
    return redis.error_reply('FEASTROW ' .. row .. ' ' .. stored.err)
  end
  local fresh = true
  if stored then
    local old_seconds, old_nanos = parse_timestamp(stored)
    if old_seconds == nil then
      return redis.error_reply('FEASTROW ' .. row .. ' malformed stored timestamp in field ' .. ts_field)
    end
    if (old_seconds ~= 0 or old_nanos ~= 0)
        and (seconds < old_seconds or (seconds == old_seconds and nanos <= old_nanos)) then
      fresh = false
    end
  end

  if fresh then
    local args = {key, ts_field, stamp}
    local pairs_in_args = 1
    for j = first, pos - 1, 2 do
      args[#args + 1] = ARGV[j]
      args[#args + 1] = ARGV[j + 1]
      pairs_in_args = pairs_in_args + 1
      if pairs_in_args >= MAX_PAIRS then
        redis.call('HSET', unpack_(args))
        args = {key}
        pairs_in_args = 0
      end
    end
    if pairs_in_args > 0 then
      redis.call('HSET', unpack_(args))
    end
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
    written = written + 1
  end
end
return written

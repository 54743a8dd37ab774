-- Event-time-safe write of feature rows into Feast's Redis layout, atomically per script call.
--
-- KEYS[i]  entity hash key of row i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV[1]  key TTL in seconds, 0 for none
-- ARGV[2]  timestamp field name, "_ts:<view>"
-- then, for each row in KEYS order:
--   seconds, nanos, m, then m HSET arguments: "_ts:<view>", serialized Timestamp, and the
--   row's feature field/value pairs (contiguous, so HSET gets them straight from ARGV)
--
-- A row is written only when the stored timestamp is absent (or the zero epoch, as in Feast)
-- or strictly older than the row's; rows of one call are applied in order, so the newest of
-- several rows for one key wins. Returns the number of rows written.
-- Errors name the row (1-based index into KEYS) and never alter that row's stored data.

local unpack_ = unpack or table.unpack
local ttl = tonumber(ARGV[1])
local ts_field = ARGV[2]
local MAX_UNPACK = 2000 -- HSET arguments per call: well inside Lua's C stack (even)

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
    -- Sum the 7-bit groups and, separately, their complements: a negative int64 is a
    -- 10-byte varint whose value (2^64 - |x|) a Lua number cannot hold exactly, but its
    -- complement sum (|x| - 1) is small for any timestamp a datetime can express.
    local value, complement, scale, byte, count = 0, 0, 1, 128, 0
    while byte >= 128 do
      if i > n or count >= 10 then
        return nil
      end
      byte = string.byte(raw, i)
      i = i + 1
      count = count + 1
      if count <= 9 then
        value = value + (byte % 128) * scale
        complement = complement + (127 - byte % 128) * scale
      end
      scale = scale * 128
    end
    if count == 10 then
      value = -(complement + 1) -- bit 63 set: negative (seconds before 1970)
    end
    if tag == 8 then
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
  local first = pos + 3
  local last = first + tonumber(ARGV[pos + 2]) - 1
  pos = last + 1

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
    for chunk = first, last, MAX_UNPACK do
      local stop = chunk + MAX_UNPACK - 1
      if stop > last then
        stop = last
      end
      redis.call('HSET', key, unpack_(ARGV, chunk, stop))
    end
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
    written = written + 1
  end
end
return written

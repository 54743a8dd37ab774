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
--
-- parse_timestamp, stored_wins and hset_args come from event_time.lua, which _script.py puts in front of this file.

local ttl = tonumber(ARGV[1])
local ts_field = ARGV[2]

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
    if stored_wins(old_seconds, old_nanos, seconds, nanos) then
      fresh = false
    end
  end

  if fresh then
    hset_args(key, first, last)
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
    written = written + 1
  end
end
return written

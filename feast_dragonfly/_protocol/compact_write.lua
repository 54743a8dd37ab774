-- Event-time-safe write of compact records (one string per entity and feature view),
-- atomically per script call.
--
-- KEYS[i]       record key of row i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV[2i - 1]  the row's record: a format byte, then its event time as 12 bytes that sort
--               byte-wise in time order (8 bytes biased seconds, 4 bytes nanos, big-endian)
-- ARGV[2i]      when the record expires: Unix time in milliseconds (SET ... PXAT), "0" for never
--
-- A row is written only when the key is absent, holds the zero epoch (as in Feast), or holds
-- a strictly older event time; rows of one call are applied in order, so the newest of several
-- rows for one key wins. Returns the number of rows written. A key holding another type is
-- reported (the error names the row, 1-based) and left unchanged.
--
-- Event times are compared byte by byte: Lua's string `<` follows the server's locale.

local ZERO_EPOCH = '\128\0\0\0\0\0\0\0\0\0\0\0'

-- true when the 12-byte event time a is strictly newer than b
local function newer(a, b)
  for i = 1, 12 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return false
end

local written = 0
for row = 1, #KEYS do
  local key = KEYS[row]
  local record = ARGV[2 * row - 1]
  local expire_at = ARGV[2 * row]
  local stored = redis.pcall('GETRANGE', key, 1, 12)
  if type(stored) == 'table' and stored.err then
    return redis.error_reply('FEASTROW ' .. row .. ' ' .. stored.err)
  end
  if #stored < 12 or stored == ZERO_EPOCH or newer(string.sub(record, 2, 13), stored) then
    if expire_at == '0' then
      redis.call('SET', key, record)
    else
      redis.call('SET', key, record, 'PXAT', expire_at)
    end
    written = written + 1
  end
end
return written

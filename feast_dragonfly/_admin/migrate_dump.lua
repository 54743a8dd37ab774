-- Read entity hashes for `feast-dragonfly migrate` as DUMP payloads, for keys the target does
-- not hold yet: such a key is copied whole with RESTORE (no field ever crosses the client),
-- so the checks the per-view merge would make run here, on the source. Reads only.
--
-- KEYS[i]  source hash key i (declared, as DragonflyDB requires)
-- Returns, per key: pttl, status, views, payload
--   status 0: copy it (views: its number of _ts:<view> fields; payload: DUMP of the key)
--          1: not a hash, 2: a _ts field is not a protobuf Timestamp, 3: no _ts field,
--          4: gone (expired or deleted since the SCAN); payload is then false (nil)
-- parse_timestamp comes from event_time.lua (prepended by _script.py).

local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local kind = redis.call('TYPE', key)
  kind = type(kind) == 'table' and kind.ok or kind
  local status, views, payload = 0, 0, false
  if kind == 'none' then
    status = 4
  elseif kind ~= 'hash' then
    status = 1
  else
    local stamps = {}
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.sub(name, 1, 4) == '_ts:' then
        stamps[#stamps + 1] = name
      end
    end
    if #stamps == 0 then
      status = 3
    else
      for _, raw in ipairs(redis.call('HMGET', key, unpack_(stamps))) do
        if not raw or parse_timestamp(raw) == nil then
          status = 2
        end
      end
      if status == 0 then
        views = #stamps
        payload = redis.call('DUMP', key)
      end
    end
  end
  out[#out + 1] = redis.call('PTTL', key)
  out[#out + 1] = status
  out[#out + 1] = views
  out[#out + 1] = payload
end
return out

-- Merge entity hashes copied from another server into this one, per feature view, with
-- Feast's event-time rule, atomically per key (`feast-dragonfly migrate`).
--
-- KEYS[i]  target hash key i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV, for each key in KEYS order:
--   pttl     the source key's remaining time to live in ms, -1 for none; 0 for none that must
--            also hold on the target (layout conversions: a view that never expires is written
--            into a hash that may have an expiry already, which it must not inherit)
--   g        number of groups, then for each group:
--     k, m   k timestamp fields, m HSET arguments: first the k "_ts:<view>" field/value pairs,
--            then the group's feature field/value pairs (contiguous, for HSET)
--
-- A group is one feature view, or several when the caller cannot tell their fields apart (it
-- then decides for all of them at once). It is written when the target has none of its
-- timestamps (or only the zero epoch, as in Feast) or when the newest of the source's is
-- strictly newer than every one stored; otherwise the target's fields are kept. When anything
-- was written the key gets the source's remaining TTL, unless that would shorten (or add) an
-- expiry of a key that already existed; with pttl 0 it loses any expiry it had. Returns, per key: views written, views kept, status
-- (0 ok, 1 the key is not a hash, 2 a timestamp on either side is malformed).
-- parse_timestamp, newer, stored_wins and hset_args come from event_time.lua (prepended by _script.py).

local out = {}
local pos = 1
for i = 1, #KEYS do
  local key = KEYS[i]
  local pttl = tonumber(ARGV[pos])
  local groups = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local before = redis.call('PTTL', key) -- -2: no such key, -1: no expiry
  local written, kept, status = 0, 0, 0
  for _ = 1, groups do
    local k = tonumber(ARGV[pos])
    local first = pos + 2
    local last = first + tonumber(ARGV[pos + 1]) - 1
    pos = last + 1
    if status == 0 then
      local best_seconds, best_nanos
      for j = 0, k - 1 do
        local seconds, nanos = parse_timestamp(ARGV[first + 2 * j + 1])
        if seconds == nil then
          status = 2
          break
        end
        if best_seconds == nil or newer(seconds, nanos, best_seconds, best_nanos) then
          best_seconds, best_nanos = seconds, nanos
        end
      end
      local fresh = true
      if status == 0 and before ~= -2 then
        for j = 0, k - 1 do
          local stored = redis.pcall('HGET', key, ARGV[first + 2 * j])
          if type(stored) == 'table' and stored.err then
            status = 1
            break
          end
          if stored then
            local seconds, nanos = parse_timestamp(stored)
            if seconds == nil then
              status = 2
              break
            end
            if stored_wins(seconds, nanos, best_seconds, best_nanos) then
              fresh = false
            end
          end
        end
      end
      if status == 0 then
        if fresh then
          hset_args(key, first, last)
          written = written + k
        else
          kept = kept + k
        end
      end
    end
  end
  if written > 0 and pttl > 0 and (before == -2 or (before > 0 and before < pttl)) then
    redis.call('PEXPIRE', key, pttl)
  elseif written > 0 and pttl == 0 and before >= 0 then
    redis.call('PERSIST', key)
  end
  out[#out + 1] = written
  out[#out + 1] = kept
  out[#out + 1] = status
end
return out

-- Merge entity hashes copied from another server into this one, per feature view, with
-- Feast's event-time rule, atomically per key (`feast-dragonfly migrate`).
--
-- KEYS[i]  target hash key i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV[1]  1: merge a several-view group whose views are newer on different sides as a whole
--          (losing the older side's newer views); 0: leave such a key alone (status 3)
-- then, for each key in KEYS order:
--   pttl     the source key's remaining time to live in ms, -1 for none; 0 for none that must
--            also hold on the target (layout conversions: a view that never expires is written
--            into a hash that may have an expiry already, which it must not inherit)
--   g        number of groups, then for each group:
--     k, m   k timestamp fields, m HSET arguments: first the k "_ts:<view>" field/value pairs,
--            then the group's feature field/value pairs (contiguous, for HSET)
--
-- A group of one view is written when the target has no timestamp for it (or only the zero
-- epoch, as in Feast) or when the source's is strictly newer; otherwise the target's fields
-- are kept. A group of several views is a key whose fields the caller cannot tell apart (no
-- registry); each of its views is compared on its own:
--   * no view newer on the target: every field is written;
--   * no view newer on the source: the views the target lacks are written — their timestamps
--     and the group's fields the target does not have — and the target's views are kept;
--   * newer on each side: status 3, nothing of the key written (its fields' owners decide
--     which survive); or, with ARGV[1] = 1, merged as a whole: the newest timestamp on
--     either side wins for every view both hold (status 4), the views the target lacks are
--     still written as above.
-- When anything was written the key gets the source's remaining TTL, unless that would shorten
-- (or add) an expiry of a key that already existed; with pttl 0 it loses any expiry it had.
-- Returns, per key: views written, views kept, status (0 ok, 1 the key is not a hash, 2 a
-- timestamp on either side is malformed, 3 views newer on each side (nothing written), 4
-- merged as a whole).
-- parse_timestamp, newer, stored_wins and hset_args come from event_time.lua (prepended by _script.py).

local lossy = ARGV[1] == '1'

-- HSET key with the field/value pairs of a Lua table, in chunks of MAX_UNPACK arguments
local function hset_table(key, args)
  for chunk = 1, #args, MAX_UNPACK do
    local stop = chunk + MAX_UNPACK - 1
    if stop > #args then
      stop = #args
    end
    redis.call('HSET', key, unpack_(args, chunk, stop))
  end
end

-- A group of k > 1 views at ARGV[first..last] whose fields cannot be told apart: returns
-- views written, views kept, status.
local function merge_several(key, before, k, first, last)
  local lacking, source_wins, target_wins = {}, 0, 0
  local best_seconds, best_nanos, there_seconds, there_nanos
  for j = 0, k - 1 do
    local seconds, nanos = parse_timestamp(ARGV[first + 2 * j + 1])
    if seconds == nil then
      return 0, 0, 2
    end
    if best_seconds == nil or newer(seconds, nanos, best_seconds, best_nanos) then
      best_seconds, best_nanos = seconds, nanos
    end
    local stored = false
    if before ~= -2 then
      stored = redis.pcall('HGET', key, ARGV[first + 2 * j])
      if type(stored) == 'table' and stored.err then
        return 0, 0, 1
      end
    end
    local stored_seconds, stored_nanos = 0, 0
    if stored then
      stored_seconds, stored_nanos = parse_timestamp(stored)
      if stored_seconds == nil then
        return 0, 0, 2
      end
    end
    if stored_seconds == 0 and stored_nanos == 0 then
      lacking[#lacking + 1] = j
    else
      if there_seconds == nil or newer(stored_seconds, stored_nanos, there_seconds, there_nanos) then
        there_seconds, there_nanos = stored_seconds, stored_nanos
      end
      if stored_wins(stored_seconds, stored_nanos, seconds, nanos) then
        target_wins = target_wins + 1
      else
        source_wins = source_wins + 1
      end
    end
  end
  local status = 0
  if source_wins > 0 and target_wins > 0 then
    if not lossy then
      return 0, 0, 3
    end
    status = 4
    if newer(best_seconds, best_nanos, there_seconds, there_nanos) then
      target_wins = 0
    else
      source_wins = 0
    end
  end
  if target_wins == 0 then
    hset_args(key, first, last)
    return k, 0, status
  end
  if #lacking == 0 then
    return 0, k, status
  end
  local args = {}
  for _, j in ipairs(lacking) do
    args[#args + 1] = ARGV[first + 2 * j]
    args[#args + 1] = ARGV[first + 2 * j + 1]
  end
  for f = first + 2 * k, last, 2 do
    if redis.call('HEXISTS', key, ARGV[f]) == 0 then
      args[#args + 1] = ARGV[f]
      args[#args + 1] = ARGV[f + 1]
    end
  end
  hset_table(key, args)
  return #lacking, k - #lacking, status
end

local out = {}
local pos = 2
for i = 1, #KEYS do
  local key = KEYS[i]
  local pttl = tonumber(ARGV[pos])
  local groups = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local before = redis.call('PTTL', key) -- -2: no such key, -1: no expiry
  local written, kept, status = 0, 0, 0
  local merged_whole = false
  for _ = 1, groups do
    local k = tonumber(ARGV[pos])
    local first = pos + 2
    local last = first + tonumber(ARGV[pos + 1]) - 1
    pos = last + 1
    if status == 0 and k > 1 then
      local w, kp
      w, kp, status = merge_several(key, before, k, first, last)
      written, kept = written + w, kept + kp
      if status == 4 then
        status, merged_whole = 0, true
      end
    elseif status == 0 then
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
  if status == 0 and merged_whole then
    status = 4
  end
  out[#out + 1] = written
  out[#out + 1] = kept
  out[#out + 1] = status
end
return out

-- Remove source keys whose data a layout conversion has confirmed on the target, but only
-- when they are unchanged since they were read (`feast-dragonfly migrate --remove-source`).
--
-- KEYS[i]  source key i (every key the script touches is declared, as DragonflyDB requires)
-- ARGV, for each key in KEYS order: its kind, then
--   "h"  (an entity hash): k, then k "_ts:<view>" field/value pairs: every timestamp field the
--        hash held when it was read
--   "s"  (a compact record): the bytes it held when it was read
-- A hash is deleted only when it still holds exactly those timestamp fields with those values
-- and no other (every writer rewrites a view's _ts field with its features), a record only
-- when it still holds those bytes: a write that landed after the read keeps the key.
-- Returns, per key, 1 (removed) or 0 (left as it is).

local out = {}
local pos = 1
for i = 1, #KEYS do
  local key = KEYS[i]
  local same = false
  if ARGV[pos] == 's' then
    same = redis.pcall('GET', key) == ARGV[pos + 1]
    pos = pos + 2
  else
    local k = tonumber(ARGV[pos + 1])
    local names = redis.pcall('HKEYS', key)
    if type(names) == 'table' and not names.err then
      local stamps = 0
      for _, name in ipairs(names) do
        if string.sub(name, 1, 4) == '_ts:' then
          stamps = stamps + 1
        end
      end
      same = stamps == k and k > 0
      for j = 0, k - 1 do
        if same and redis.call('HGET', key, ARGV[pos + 2 + 2 * j]) ~= ARGV[pos + 3 + 2 * j] then
          same = false
        end
      end
    end
    pos = pos + 2 + 2 * k
  end
  if same then
    redis.call('DEL', key)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

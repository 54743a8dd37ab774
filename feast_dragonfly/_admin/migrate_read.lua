-- Read entity hashes for `feast-dragonfly migrate`: every key's PTTL and HGETALL in one reply
-- (a reply per key and command would cost the client more than the copy itself). Reads only.
--
-- KEYS[i]  source hash key i (declared, as DragonflyDB requires)
-- Returns {pttl_1, fields_1, pttl_2, fields_2, ...}: fields_i is the flat field/value list,
-- or an error reply in its place when key i is not a hash.

local out = {}
for i = 1, #KEYS do
  out[2 * i - 1] = redis.call('PTTL', KEYS[i])
  out[2 * i] = redis.pcall('HGETALL', KEYS[i])
end
return out

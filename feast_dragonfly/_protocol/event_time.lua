-- Shared by the server-side scripts (_script.py prepends it to each): reading a stored
-- google.protobuf.Timestamp (Lua cannot compare the serialized bytes directly), comparing
-- two of them, and HSET of a long run of ARGV without overflowing Lua's C stack.

local unpack_ = unpack or table.unpack
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

-- true when the (seconds, nanos) pair a is strictly newer than b
local function newer(a_seconds, a_nanos, b_seconds, b_nanos)
  return a_seconds > b_seconds or (a_seconds == b_seconds and a_nanos > b_nanos)
end

-- Feast's rule: stored data wins over incoming data unless the incoming event time is strictly
-- newer; a stored zero epoch counts as no data at all
local function stored_wins(stored_seconds, stored_nanos, seconds, nanos)
  return (stored_seconds ~= 0 or stored_nanos ~= 0)
    and not newer(seconds, nanos, stored_seconds, stored_nanos)
end

-- HSET key ARGV[first..last] (field/value pairs), in chunks of MAX_UNPACK arguments
local function hset_args(key, first, last)
  for chunk = first, last, MAX_UNPACK do
    local stop = chunk + MAX_UNPACK - 1
    if stop > last then
      stop = last
    end
    redis.call('HSET', key, unpack_(ARGV, chunk, stop))
  end
end

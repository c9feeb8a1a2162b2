--[[
  availability_read: an item's stock per location as availability reads see it on a replica (REDIS_READ_FROM=
  replica): what availability.lua answers, without writing. A hold whose TTL passed counts as released already
  (its units are subtracted from reserved here; the master releases it at its next decision on the item). The
  loader declares it no-writes (scripts.ts, readOnlyScripts), so a replica runs it.

  KEYS[1]    generation marker (of the slot)
  KEYS[2..4] the item's stock, holds, exp
  ARGV[1]    none: the script takes no arguments

  Returns {S.OK, generation, stockFields} (HGETALL of the stock hash, reserved net of due holds), {S.NO_STATE} or
  {S.NOT_FOUND}
]]
--@include common
-- A replica has its own node id, never the master's that the marker names: only the marker's presence counts here
-- (a replica may lag or have missed writes; a read never decides).
local marker = redis.call('GET', KEYS[1])
if not marker then return { S.NO_STATE } end
local gen = string.match(marker, '^[^@]+')

local stockKey, holdsKey, expKey = itemKeys(1, 1)
local fields = redis.call('HGETALL', stockKey)
if #fields == 0 then return { S.NOT_FOUND } end
local released = {}
for _, field in ipairs(redis.call('ZRANGEBYSCORE', expKey, '-inf', nowMs())) do
  local value = redis.call('HGET', holdsKey, field)
  local state, qty
  if value then state, qty = parseHold(value) end
  if state == H.pending then
    local reserved = reservedField(fieldLocation(field))
    released[reserved] = (released[reserved] or 0) + qty
  end
end
for i = 1, #fields, 2 do
  if released[fields[i]] then fields[i + 1] = tostring(tonumber(fields[i + 1]) - released[fields[i]]) end
end
return { S.OK, gen, fields }

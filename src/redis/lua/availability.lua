--[[
  availability: an item's stock per location, with holds whose TTL passed already released.

  KEYS[1]    generation marker
  KEYS[2..4] the item's stock, holds, exp
  ARGV[1]    tombstone retention, ms

  Returns {S.OK, generation, stockFields} (HGETALL of the stock hash), {S.NO_STATE} or {S.NOT_FOUND}
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
expireDue(stockKey, holdsKey, expKey, nowMs(), tonumber(ARGV[1]))
local fields = redis.call('HGETALL', stockKey)
if #fields == 0 then return { S.NOT_FOUND } end
return { S.OK, gen, fields }

--[[
  stock: set (absolute) or adjust (delta) an item's on-hand at one location, atomically with its reservations.
  A set creates the item/location if new; an adjust needs it to exist and never takes on-hand below zero.
  On-hand may be set below what is reserved: existing holds stay, and available reads 0 until restock.

  KEYS[1]    generation marker
  KEYS[2..4] the item's stock, holds, exp
  ARGV[1]    "set" or "adjust"
  ARGV[2]    location
  ARGV[3]    quantity (set) or delta (adjust)
  ARGV[4]    tombstone retention, ms
  ARGV[5]    expected generation, or '' for any (a compensation must not apply to a rebuilt Redis)

  Returns
    {S.OK, generation, onHandDelta, stockFields}  stockFields: the item's stock hash after the change (HGETALL)
    {S.NO_STATE}
    {S.STALE}                                     ARGV[5] is set and Redis is at another generation
    {S.NOT_FOUND}
    {S.INSUFFICIENT, onHand}                      the delta would take on-hand below zero
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
if ARGV[5] ~= '' and ARGV[5] ~= gen then return { S.STALE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
expireDue(stockKey, holdsKey, expKey, nowMs(), tonumber(ARGV[4]))

local onHandField = 'h:' .. ARGV[2]
local current = redis.call('HGET', stockKey, onHandField)
local amount = tonumber(ARGV[3])
local delta
if ARGV[1] == 'set' then
  delta = amount - tonumber(current or '0')
  redis.call('HSET', stockKey, onHandField, amount)
  redis.call('HSETNX', stockKey, 'r:' .. ARGV[2], 0)
else
  if not current then return { S.NOT_FOUND } end
  if tonumber(current) + amount < 0 then return { S.INSUFFICIENT, tonumber(current) } end
  delta = amount
  redis.call('HINCRBY', stockKey, onHandField, amount)
end
return { S.OK, gen, delta, redis.call('HGETALL', stockKey) }

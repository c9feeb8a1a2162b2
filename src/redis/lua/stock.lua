--[[
  stock: set (absolute) or adjust (delta) an item's on-hand at one location, atomically with its reservations;
  or undo such a change whose record in PostgreSQL failed. A set creates the item/location if new; an adjust needs
  it to exist and never takes on-hand below zero. On-hand may be set below what is reserved: existing holds stay,
  and available reads 0 until restock.

  KEYS[1]    generation marker
  KEYS[2..4] the item's stock, holds, exp
  ARGV[1]    "set", "adjust" or "undo"
  ARGV[2]    location
  ARGV[3]    quantity (set), delta (adjust), or the on-hand delta to take back (undo)
  ARGV[4]    tombstone retention, ms
  ARGV[5]    expected generation, or '' for any (an undo must not apply to a rebuilt Redis)
  ARGV[6]    undo only: "1" if the change being undone created the location (then it is removed again)

  Returns
    {S.OK, generation, onHandDelta, created, stockFields}  created: 1 if this created the location;
                                                           stockFields: the item's stock hash after (HGETALL)
    {S.NO_STATE}
    {S.STALE}                                     ARGV[5] is set and Redis is at another generation
    {S.NOT_FOUND}
    {S.INSUFFICIENT, onHand}                      on-hand would go below zero
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
if ARGV[5] ~= '' and ARGV[5] ~= gen then return { S.STALE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
expireDue(stockKey, holdsKey, expKey, nowMs(), tonumber(ARGV[4]))

local mode = ARGV[1]
local onHandField = 'h:' .. ARGV[2]
local reservedField = 'r:' .. ARGV[2]
local current = redis.call('HGET', stockKey, onHandField)
local amount = tonumber(ARGV[3])
if mode == 'set' then
  redis.call('HSET', stockKey, onHandField, amount)
  redis.call('HSETNX', stockKey, reservedField, 0)
  return { S.OK, gen, amount - tonumber(current or '0'), current and 0 or 1, redis.call('HGETALL', stockKey) }
end

local delta = mode == 'undo' and -amount or amount
if not current then return { S.NOT_FOUND } end
if tonumber(current) + delta < 0 then return { S.INSUFFICIENT, tonumber(current) } end
local reserved = tonumber(redis.call('HGET', stockKey, reservedField) or '0')
if mode == 'undo' and ARGV[6] == '1' and tonumber(current) + delta == 0 and reserved == 0 then
  redis.call('HDEL', stockKey, onHandField, reservedField)
else
  redis.call('HINCRBY', stockKey, onHandField, delta)
end
return { S.OK, gen, delta, 0, redis.call('HGETALL', stockKey) }

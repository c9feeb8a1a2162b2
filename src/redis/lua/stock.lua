--[[
  stock: change an item's on-hand at one location, atomically with its reservations. Decreases apply at once
  (undoing one is always safe). Increases are two-phase, so Redis never offers units PostgreSQL has not recorded:
  "set"/"adjust" only note the increase as pending supply (`p:<location>`, not available), the caller records it
  in PostgreSQL, then "apply" moves it into on-hand ("abandon" drops it if the record failed). A set computes its
  delta against on-hand plus pending supply, so concurrent sets do not add up. On-hand never goes below zero; it
  may be set below what is reserved (existing holds stay; available reads 0 until restock).

  KEYS[1]    generation marker
  KEYS[2..4] the item's stock, holds, exp
  KEYS[5]    the set of stocked item ids (a set adds the item: reconciliation lists items from it)
  ARGV[1]    "set", "adjust", "apply", "abandon" or "undo"
  ARGV[2]    location
  ARGV[3]    set: the quantity; adjust: the delta; apply/abandon/undo: the on-hand delta decided earlier
  ARGV[4]    tombstone retention, ms
  ARGV[5]    apply/abandon/undo: the generation of the decision ('' otherwise); a rebuilt Redis is left alone
  ARGV[6]    abandon/undo: "1" if the change created the location (then it is removed again)
  ARGV[7]    the item id

  Returns
    {S.OK, generation, onHandDelta, created, pending, stockFields}
        created: 1 if this created the location; pending: 1 if the delta still awaits "apply";
        stockFields: the item's stock hash after the change (HGETALL)
    {S.NO_STATE}
    {S.STALE}                 ARGV[5] is set and Redis is at another generation
    {S.NOT_FOUND}             adjust of a location never stocked
    {S.INSUFFICIENT, onHand}  the delta would take on-hand below zero
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
if ARGV[5] ~= '' and ARGV[5] ~= gen then return { S.STALE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
expireDue(stockKey, holdsKey, expKey, nowMs(), tonumber(ARGV[4]))

local mode = ARGV[1]
-- This location's fields in the stock hash.
local onHandAt, reservedAt, pendingAt = onHandField(ARGV[2]), reservedField(ARGV[2]), pendingField(ARGV[2])
local current = redis.call('HGET', stockKey, onHandAt)
local pending = tonumber(redis.call('HGET', stockKey, pendingAt) or '0')
local onHand = tonumber(current or '0')
local amount = tonumber(ARGV[3])

local function reply(delta, created, deferred)
  return { S.OK, gen, delta, created and 1 or 0, deferred and 1 or 0, redis.call('HGETALL', stockKey) }
end

local function movePending(delta)
  if pending - delta == 0 then redis.call('HDEL', stockKey, pendingAt)
  else redis.call('HINCRBY', stockKey, pendingAt, -delta) end
end

-- Removes a location that only the undone change had created.
local function removeIfCreated()
  if ARGV[6] == '1' and tonumber(redis.call('HGET', stockKey, onHandAt) or '0') == 0
      and tonumber(redis.call('HGET', stockKey, reservedAt) or '0') == 0
      and not redis.call('HGET', stockKey, pendingAt) then
    redis.call('HDEL', stockKey, onHandAt, reservedAt)
  end
end

if mode == 'apply' then
  movePending(amount)
  redis.call('HINCRBY', stockKey, onHandAt, amount)
  redis.call('HSETNX', stockKey, reservedAt, 0)
  return reply(amount, false, false)
elseif mode == 'abandon' then
  movePending(amount)
  removeIfCreated()
  return reply(0, false, false)
elseif mode == 'undo' then
  redis.call('HINCRBY', stockKey, onHandAt, -amount)
  removeIfCreated()
  return reply(-amount, false, false)
end

local created = not current and pending == 0
local delta
if mode == 'set' then
  redis.call('SADD', KEYS[5], ARGV[7])
  -- Clamped at zero: a set below what a concurrent increase still has pending keeps on-hand non-negative.
  delta = math.max(amount - pending, 0) - onHand
  if not current and delta <= 0 then
    redis.call('HSET', stockKey, onHandAt, 0)
    redis.call('HSETNX', stockKey, reservedAt, 0)
  end
else
  if not current then return { S.NOT_FOUND } end
  delta = amount
  if onHand + delta < 0 then return { S.INSUFFICIENT, onHand } end
end

if delta > 0 then
  redis.call('HINCRBY', stockKey, pendingAt, delta)
  return reply(delta, created, true)
end
if delta < 0 then redis.call('HINCRBY', stockKey, onHandAt, delta) end
return reply(delta, created, false)

--[[
  stock: decide a change of an item's on-hand at one location, atomically with its reservations, and end it.

  Deciding ("set", "adjust") records an intent under the caller's op id, in the same script: the decision's fate is
  open until the caller (or reconciliation, if the caller died) ends it, and ending acts only while the intent is
  there, so a late or repeated end changes nothing.
  - An increase is two-phase, so Redis never offers units PostgreSQL has not recorded: it waits as pending supply
    (`p:<location>`, not available, intent kind supply); once recorded, "apply" moves it into on-hand; "abandon"
    drops it if the record failed.
  - A decrease applies at once (intent kind debit: taking units away is always safe); once recorded, "settle" only
    drops the intent; "undo" gives the units back if the record failed. A set that changes nothing but creates the
    location records a debit intent of 0, so that an "undo" can remove the location again.
  A set computes its delta against on-hand plus pending supply, so concurrent sets do not add up. On-hand never goes
  below zero; it may be set below what is reserved (existing holds stay; available reads 0 until restock).

  KEYS[1]    generation marker
  KEYS[2..4] the item's stock, holds, exp
  KEYS[5]    the set of stocked item ids (a set adds the item: reconciliation lists items from it)
  KEYS[6]    the item's stock intents
  ARGV[1]    "set" or "adjust" (decide); "apply", "abandon", "settle" or "undo" (end the intent ARGV[8])
  ARGV[2]    set/adjust: location (an end reads it from the intent)
  ARGV[3]    set: the quantity; adjust: the delta
  ARGV[4]    tombstone retention, ms
  ARGV[5]    ends: the generation of the decision ('' to skip the check); a rebuilt Redis is left alone
  ARGV[6]    abandon/undo: "1" if the change created the location (then it is removed again)
  ARGV[7]    the item id
  ARGV[8]    the op id (a UUID; recorded in PostgreSQL with the change)
  ARGV[9]    set/adjust: the deciding node's id

  Returns
    {S.OK, generation, onHandDelta, created, pending, stockFields, intent}
        created: 1 if this created the location; pending: 1 if the delta still awaits "apply"; intent: 1 if an
        intent was recorded (to be ended); stockFields: the item's stock hash after the change (HGETALL)
    {S.NO_STATE}
    {S.STALE}                 ARGV[5] is set and Redis is at another generation
    {S.NOT_FOUND}             adjust of a location never stocked
    {S.INSUFFICIENT, onHand}  the delta would take on-hand below zero
    {S.ALREADY}               an end whose intent is gone (ended already, or Redis was rebuilt): nothing changed
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
if ARGV[5] ~= '' and ARGV[5] ~= gen then return { S.STALE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
local intentsKey = KEYS[6]
local now = nowMs()
expireDue(stockKey, holdsKey, expKey, now, tonumber(ARGV[4]))

local mode = ARGV[1]
local opId = ARGV[8]

local function reply(delta, created, deferred, intent)
  return { S.OK, gen, delta, created and 1 or 0, deferred and 1 or 0, redis.call('HGETALL', stockKey), intent and 1 or 0 }
end

if mode ~= 'set' and mode ~= 'adjust' then
  -- An end: only while the decision's intent is there.
  local value = redis.call('HGET', intentsKey, opId)
  if not value then return { S.ALREADY } end
  local location, delta, kind = parseIntent(value)
  local supply = (mode == 'apply' or mode == 'abandon')
  if not location or (kind == L.intentSupply) ~= supply then
    return redis.error_reply('stock ' .. mode .. ': intent ' .. opId .. ' is ' .. value)
  end
  redis.call('HDEL', intentsKey, opId)
  local onHandAt, reservedAt, pendingAt = onHandField(location), reservedField(location), pendingField(location)

  -- Removes a location that only the ended change had created.
  local function removeIfCreated()
    if ARGV[6] == '1' and tonumber(redis.call('HGET', stockKey, onHandAt) or '0') == 0
        and tonumber(redis.call('HGET', stockKey, reservedAt) or '0') == 0
        and not redis.call('HGET', stockKey, pendingAt) then
      redis.call('HDEL', stockKey, onHandAt, reservedAt)
    end
  end

  if supply then
    -- The supply leaves pending either way (never below zero, whatever an older version left there).
    local left = tonumber(redis.call('HGET', stockKey, pendingAt) or '0') - delta
    if left > 0 then redis.call('HSET', stockKey, pendingAt, left) else redis.call('HDEL', stockKey, pendingAt) end
    if mode == 'apply' then
      redis.call('HINCRBY', stockKey, onHandAt, delta)
      redis.call('HSETNX', stockKey, reservedAt, 0)
      return reply(delta, false, false, false)
    end
    removeIfCreated()
    return reply(0, false, false, false)
  end
  if mode == 'undo' then
    redis.call('HINCRBY', stockKey, onHandAt, -delta)
    removeIfCreated()
    return reply(-delta, false, false, false)
  end
  return reply(0, false, false, false) -- settle: the decrease stands, recorded
end

local location = ARGV[2]
-- This location's fields in the stock hash.
local onHandAt, reservedAt, pendingAt = onHandField(location), reservedField(location), pendingField(location)
local current = redis.call('HGET', stockKey, onHandAt)
local pending = tonumber(redis.call('HGET', stockKey, pendingAt) or '0')
local onHand = tonumber(current or '0')
local amount = tonumber(ARGV[3])

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
  redis.call('HSET', intentsKey, opId, formatIntent(location, delta, L.intentSupply, now, ARGV[9]))
  return reply(delta, created, true, true)
end
if delta < 0 then redis.call('HINCRBY', stockKey, onHandAt, delta) end
if delta == 0 and not created then return reply(0, false, false, false) end
redis.call('HSET', intentsKey, opId, formatIntent(location, delta, L.intentDebit, now, ARGV[9]))
return reply(delta, created, false, true)

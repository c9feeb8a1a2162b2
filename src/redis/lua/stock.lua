--[[
  stock: decide a change of an item's on-hand (and, with a set, its safety stock) at one location, atomically with
  its reservations, and end it.

  Deciding ("set", "adjust") records an intent under the caller's op id, in the same script: the decision's fate is
  open until the caller (or reconciliation, if the caller died) ends it, and ending acts only while the intent is
  there, so a late or repeated end changes nothing.
  - An on-hand increase is two-phase, so Redis never offers units PostgreSQL has not recorded: it waits as pending
    supply (`p:<location>`, not available, intent kind supply); once recorded, "apply" moves it into on-hand;
    "abandon" drops it if the record failed.
  - An on-hand decrease applies at once (intent kind debit: taking units away is always safe); once recorded,
    "settle" only drops the intent; "undo" gives the units back if the record failed. A set that changes nothing but
    creates the location records a debit intent of 0, so that an "undo" can remove the location again.
  - Safety stock mirrors it (fail closed: Redis never lets normal reservations take units PostgreSQL has not recorded
    as free of safety stock): an increase applies to `s:<location>` at once (it only takes availability away), a
    decrease waits in `q:<location>`, still enforced, until the end. Whichever verb ends the intent, a recorded one
    ("apply", "settle") takes the decrease out of `s:`, an unrecorded one ("abandon", "undo") drops the decrease or
    takes the increase back. One intent carries both changes of a set: all or nothing, as reservations see it.
  A set computes its on-hand delta against on-hand plus pending supply, and its safety delta against safety stock
  less pending decreases, so concurrent sets do not add up. Neither goes below zero: a decrease never counts on a
  change that may still be taken back. On-hand may be set below what is reserved (existing holds stay; available
  reads 0 until restock).

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
  ARGV[10]   set: the safety stock ('' keeps it)

  Returns
    {S.OK, generation, onHandDelta, created, pending, stockFields, intent, safetyDelta}
        created: 1 if this created the location; pending: 1 if the on-hand delta still awaits "apply"; intent: 1 if
        an intent was recorded (to be ended); stockFields: the item's stock hash after the change (HGETALL);
        safetyDelta: the safety stock change (a decrease is enforced until the intent is ended as recorded)
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

local function reply(delta, created, deferred, intent, safetyDelta)
  return { S.OK, gen, delta, created and 1 or 0, deferred and 1 or 0, redis.call('HGETALL', stockKey), intent and 1 or 0,
    safetyDelta or 0 }
end

local function figure(field) return tonumber(redis.call('HGET', stockKey, field) or '0') end

-- Sets a field, or deletes it at zero (a location without safety stock keeps no safety fields).
local function store(field, value)
  if value > 0 then redis.call('HSET', stockKey, field, value) else redis.call('HDEL', stockKey, field) end
end

if mode ~= 'set' and mode ~= 'adjust' then
  -- An end: only while the decision's intent is there.
  local value = redis.call('HGET', intentsKey, opId)
  if not value then return { S.ALREADY } end
  local location, delta, kind, _, _, safetyDelta = parseIntent(value)
  local supply = (mode == 'apply' or mode == 'abandon')
  if not location or (kind == L.intentSupply) ~= supply then
    return redis.error_reply('stock ' .. mode .. ': intent ' .. opId .. ' is ' .. value)
  end
  redis.call('HDEL', intentsKey, opId)
  local onHandAt, reservedAt, pendingAt = onHandField(location), reservedField(location), pendingField(location)
  local safetyAt, safetyPendingAt = safetyField(location), safetyPendingField(location)

  -- The safety part: a recorded decrease leaves `s:`; an unrecorded one is dropped, an unrecorded increase taken back.
  local recorded = (mode == 'apply' or mode == 'settle')
  if safetyDelta < 0 then
    store(safetyPendingAt, figure(safetyPendingAt) + safetyDelta)
    if recorded then store(safetyAt, figure(safetyAt) + safetyDelta) end
  elseif safetyDelta > 0 and not recorded then
    store(safetyAt, figure(safetyAt) - safetyDelta)
  end

  -- Removes a location that only the ended change had created.
  local function removeIfCreated()
    if ARGV[6] == '1' and figure(onHandAt) == 0 and figure(reservedAt) == 0 and not redis.call('HGET', stockKey, pendingAt)
        and figure(safetyAt) == 0 and not redis.call('HGET', stockKey, safetyPendingAt) then
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
      return reply(delta, false, false, false, safetyDelta)
    end
    removeIfCreated()
    return reply(0, false, false, false, safetyDelta)
  end
  if mode == 'undo' then
    redis.call('HINCRBY', stockKey, onHandAt, -delta)
    removeIfCreated()
    return reply(-delta, false, false, false, safetyDelta)
  end
  return reply(0, false, false, false, safetyDelta) -- settle: the decrease stands, recorded
end

local location = ARGV[2]
-- This location's fields in the stock hash.
local onHandAt, reservedAt, pendingAt = onHandField(location), reservedField(location), pendingField(location)
local safetyAt, safetyPendingAt = safetyField(location), safetyPendingField(location)
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

-- Safety stock increases of this location whose intents are open: they may still be taken back.
local function safetyInFlight()
  local units = 0
  local intents = redis.call('HGETALL', intentsKey)
  for i = 2, #intents, 2 do
    local where, _, _, _, _, safetyDelta = parseIntent(intents[i])
    if where == location and safetyDelta > 0 then units = units + safetyDelta end
  end
  return units
end

-- The safety stock change of a set: against the safety stock less pending decreases; a decrease is bounded by what
-- is recorded or sure to be (never below zero, whatever becomes of the increases still open).
local safetyDelta = 0
if mode == 'set' and ARGV[10] ~= '' then
  local safety, decreasing = figure(safetyAt), figure(safetyPendingAt)
  safetyDelta = tonumber(ARGV[10]) - (safety - decreasing)
  if safetyDelta < 0 then safetyDelta = math.max(safetyDelta, -math.max(0, safety - decreasing - safetyInFlight())) end
  if safetyDelta > 0 then redis.call('HINCRBY', stockKey, safetyAt, safetyDelta) end
  if safetyDelta < 0 then redis.call('HINCRBY', stockKey, safetyPendingAt, -safetyDelta) end
end

if delta > 0 then
  redis.call('HINCRBY', stockKey, pendingAt, delta)
  redis.call('HSET', intentsKey, opId, formatIntent(location, delta, L.intentSupply, now, ARGV[9], safetyDelta))
  return reply(delta, created, true, true, safetyDelta)
end
if delta < 0 then redis.call('HINCRBY', stockKey, onHandAt, delta) end
if delta == 0 and safetyDelta == 0 and not created then return reply(0, false, false, false) end
redis.call('HSET', intentsKey, opId, formatIntent(location, delta, L.intentDebit, now, ARGV[9], safetyDelta))
return reply(delta, created, false, true, safetyDelta)

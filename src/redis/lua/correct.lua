--[[
  correct: reconciliation's fenced correction of one (item, location) whose figures drifted from PostgreSQL's. The
  caller holds PostgreSQL's stock row for it FOR SHARE, so no batch can commit a change there until it is done, and
  passes the facts it read under that lock. From them and Redis' CURRENT state (decisions go on meanwhile: whatever
  PostgreSQL does not know yet is in flight) the script computes what Redis must hold, and writes it:

    on-hand  = PostgreSQL's on-hand
               − units of holds Redis has confirmed that PostgreSQL still calls pending or does not know (confirms
                 in flight: taken from Redis' on-hand already, not yet from PostgreSQL's)
               − units of debit intents PostgreSQL has no record of (decreases in flight)
    reserved = units of the location's pending holds (after expiring due ones)
    pending  = units of supply intents PostgreSQL has no record of (increases in flight)
    safety   = PostgreSQL's safety stock + safety increases PostgreSQL has no record of (applied at once in Redis)
    safety pending = safety decreases PostgreSQL has no record of (enforced until recorded)

  Before that: intents PostgreSQL has a record of ("recorded", or "void": taken back for good) are ended, their
  change being in PostgreSQL's on-hand or never anywhere; a hold PostgreSQL has final takes PostgreSQL's state where
  Redis calls it pending, or confirmed where PostgreSQL ended it otherwise (the sweeper's expiry of a confirm never
  recorded); a pending unexpired hold PostgreSQL has and Redis lacks entirely is added again. A Redis of another
  generation than PostgreSQL's is left alone.

  KEYS[1]    generation marker
  KEYS[2..5] the item's stock, holds, exp, intents
  KEYS[6]    the set of stocked item ids
  ARGV[1]    PostgreSQL's generation
  ARGV[2]    location
  ARGV[3]    PostgreSQL's on-hand there
  ARGV[4]    tombstone retention, ms
  ARGV[5]    the item id
  ARGV[6]    PostgreSQL's safety stock there
  ARGV[7]    op facts, JSON: {op id: "recorded" or "void"} (ops PostgreSQL has no row for: none)
  ARGV[8]    reservation facts, JSON: [[id, its PostgreSQL status as a hold state code, its version], ...]
  ARGV[9]    PostgreSQL's pending unexpired holds here, JSON: [[reservation id, quantity, expiry ms, its reservation's
             version], ...]
  A hold that takes PostgreSQL's state takes its version too; one added again has PostgreSQL's version.
  The lists are JSON strings, not arguments of their own: a hot item has tens of thousands of holds, and a command
  of that many arguments would overflow the client's stack (src/redis/scripts.ts).

  Returns
    {S.OK, generation, before onHand, reserved, pending, after onHand, reserved, pending,
     confirms in flight, debits in flight, supply in flight, intents ended, holds settled, holds re-added,
     before safety, safety pending, after safety, safety pending, safety increases in flight, decreases in flight}
    {S.NO_STATE}
    {S.STALE}   Redis is at another generation than PostgreSQL
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
if gen ~= ARGV[1] then return { S.STALE } end

local stockKey, holdsKey, expKey = itemKeys(1, 1)
local intentsKey = KEYS[5]
local location = ARGV[2]
local retentionMs = tonumber(ARGV[4])
local now = nowMs()
expireDue(stockKey, holdsKey, expKey, now, retentionMs)

local ops = cjson.decode(ARGV[7])
local statuses = {}
local versions = {}
for _, r in ipairs(cjson.decode(ARGV[8])) do
  statuses[r[1]] = r[2]
  versions[r[1]] = r[3]
end
local pgHolds = {}
for n, h in ipairs(cjson.decode(ARGV[9])) do
  pgHolds[n] = { id = h[1], qty = h[2], exp = h[3], version = h[4] }
end

local onHandAt, reservedAt, pendingAt = onHandField(location), reservedField(location), pendingField(location)
local safetyAt, safetyPendingAt = safetyField(location), safetyPendingField(location)
local function figure(field) return tonumber(redis.call('HGET', stockKey, field) or '0') end
local before = { figure(onHandAt), figure(reservedAt), figure(pendingAt), figure(safetyAt), figure(safetyPendingAt) }

-- Intents at this location: end those PostgreSQL has the last word on, sum the rest (in flight).
local debits, supply, intentsEnded, safetyUp, safetyDown = 0, 0, 0, 0, 0
local intents = redis.call('HGETALL', intentsKey)
for i = 1, #intents, 2 do
  local opId = intents[i]
  local where, delta, kind, _, _, safetyDelta = parseIntent(intents[i + 1])
  if where == location then
    if ops[opId] then
      redis.call('HDEL', intentsKey, opId)
      intentsEnded = intentsEnded + 1
    else
      if kind == L.intentSupply then supply = supply + delta else debits = debits - delta end
      if safetyDelta > 0 then safetyUp = safetyUp + safetyDelta else safetyDown = safetyDown - safetyDelta end
    end
  end
end

-- Holds at this location: PostgreSQL's final states win; confirms it does not have yet are in flight.
local confirms, reserved, holdsSettled, holdsReadded = 0, 0, 0, 0
local seen = {}
local holds = redis.call('HGETALL', holdsKey)
for i = 1, #holds, 2 do
  local field = holds[i]
  if fieldLocation(field) == location then
    local reservationId = fieldReservation(field)
    seen[reservationId] = true
    local state, qty, expMs = parseHold(holds[i + 1])
    local pg = statuses[reservationId]
    local final = state and pg and pg ~= H.pending and pg ~= state
    if final and (state == H.pending or state == H.confirmed) then
      redis.call('HSET', holdsKey, field, formatHold(pg, qty, expMs, versions[reservationId]))
      redis.call('ZADD', expKey, now + retentionMs, field)
      holdsSettled = holdsSettled + 1
    elseif state == H.pending then
      reserved = reserved + qty
    elseif state == H.confirmed and pg ~= H.confirmed then
      confirms = confirms + qty
    end
  end
end
for _, h in ipairs(pgHolds) do
  if not seen[h.id] and h.exp > now then
    local field = holdField(h.id, location)
    redis.call('HSET', holdsKey, field, formatHold(H.pending, h.qty, h.exp, h.version))
    redis.call('ZADD', expKey, h.exp, field)
    reserved = reserved + h.qty
    holdsReadded = holdsReadded + 1
  end
end

local onHand = math.max(0, tonumber(ARGV[3]) - confirms - debits)
redis.call('HSET', stockKey, onHandAt, onHand, reservedAt, reserved)
local function store(field, value)
  if value > 0 then redis.call('HSET', stockKey, field, value) else redis.call('HDEL', stockKey, field) end
end
store(pendingAt, supply)
local safety = math.max(0, tonumber(ARGV[6]) + safetyUp)
store(safetyAt, safety)
store(safetyPendingAt, safetyDown)
redis.call('SADD', KEYS[6], ARGV[5])
return { S.OK, gen, before[1], before[2], before[3], onHand, reserved, supply, confirms, debits, supply, intentsEnded,
  holdsSettled, holdsReadded, before[4], before[5], safety, safetyDown, safetyUp, safetyDown }

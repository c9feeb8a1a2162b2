-- Shared helpers. The loader injects `S` (status codes) and `H` (hold states) from src/redis/status.ts, and `L`
-- (what is written inside the values) from src/redis/layout.ts: fields and values are built and read through `L`.

-- Redis' own clock, in milliseconds: the one clock every decision uses.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A cluster marker's node id (40 characters after the first '@', `at`), and its run_id (after the next '@') or nil.
local function markerNode(value, at) return string.sub(value, at + 1, at + 40) end
local function markerRunId(value, at)
  if string.sub(value, at + 41, at + 41) ~= '@' then return nil end
  return string.sub(value, at + 42)
end

-- The generation this Redis was rebuilt from, or nil when its state is gone (never decide on an empty Redis). On a
-- cluster the marker names the master that held the slot when the rebuild wrote it ("<generation>@<node id>", then
-- "@<run_id>" where the user may run INFO): a replica promoted since may have missed the last writes the old master
-- acknowledged, so to it the state is gone too until a rebuild (src/redis/keys.ts). The run_id is checked once per
-- connection instead (cluster_server_check.lua): INFO in every call would cost a fifth of the reserve script.
local function generation(markerKey)
  local value = redis.call('GET', markerKey)
  if not value then return nil end
  local at = string.find(value, '@', 1, true)
  if not at then return value end
  if markerNode(value, at) ~= redis.call('CLUSTER', 'MYID') then return nil end
  return string.sub(value, 1, at - 1)
end

-- The stock hash's fields of a location: on-hand, reserved (units of pending holds), pending supply, safety stock
-- (enforced) and safety stock decreases not yet recorded (still enforced).
local function onHandField(location) return L.onHand .. location end
local function reservedField(location) return L.reserved .. location end
local function pendingField(location) return L.pending .. location end
local function safetyField(location) return L.safety .. location end
local function safetyPendingField(location) return L.safetyPending .. location end

-- The units a reservation may take at a location: on-hand not reserved, less the safety stock unless it is high
-- priority (only those may take it). Never below zero. The one place this rule lives (api.md, "Priority
-- reservations and safety stock"): every script that holds units asks it.
local function availableAt(stockKey, location, high)
  local figures = redis.call('HMGET', stockKey, onHandField(location), reservedField(location), safetyField(location))
  local free = tonumber(figures[1] or '0') - tonumber(figures[2] or '0')
  if not high then free = free - math.max(0, tonumber(figures[3] or '0')) end
  return math.max(0, free)
end

-- Whether the item is stocked at the location (PUT created it there): it has an on-hand figure, 0 or more.
local function stockedAt(stockKey, location)
  return redis.call('HEXISTS', stockKey, onHandField(location)) == 1
end

-- Every location the item is stocked at, by name ascending (byte order: identifiers are ASCII).
local function stockedLocations(stockKey)
  local out = {}
  for _, field in ipairs(redis.call('HKEYS', stockKey)) do
    if string.sub(field, 1, #L.onHand) == L.onHand then out[#out + 1] = string.sub(field, #L.onHand + 1) end
  end
  table.sort(out)
  return out
end

-- A Lua pattern that matches `s` literally.
local function literal(s) return (string.gsub(s, '%p', '%%%0')) end

local HOLD_PATTERN = '^(%a)' .. literal(L.holdValueSep) .. '(%d+)' .. literal(L.holdValueSep) .. '(%d+)$'
local VERSIONED_HOLD_PATTERN = string.sub(HOLD_PATTERN, 1, -2) .. literal(L.holdValueSep) .. '(%d+)$'

-- A hold is stored as "<state>:<quantity>:<expiresAtMs>:<version>" under the field "<reservationId>:<location>";
-- a confirmed hold's quantity is the units it sold (a partial confirm sells fewer than held, even none), what a
-- revert or a reconciliation gives back to on-hand; the version is its reservation's (api.md, "Versions"). A value of an older version has no version: it reads as
-- the one it would have had (1 while pending, 2 once ended: creation and one transition were its only changes).
local function parseHold(value)
  local state, qty, expMs, version = string.match(value, VERSIONED_HOLD_PATTERN)
  if not state then
    state, qty, expMs = string.match(value, HOLD_PATTERN)
    if not state then return nil end
    version = state == H.pending and 1 or 2
  end
  return state, tonumber(qty), tonumber(expMs), tonumber(version)
end

local function formatHold(state, qty, expMs, version)
  return state .. L.holdValueSep .. qty .. L.holdValueSep .. expMs .. L.holdValueSep .. version
end

local function holdField(reservationId, location)
  return reservationId .. L.holdFieldSep .. location
end

-- A reservation id never contains the separator; a location may, so the field splits at its first one.
local function fieldLocation(field)
  return string.sub(field, string.find(field, L.holdFieldSep, 1, true) + #L.holdFieldSep)
end

local function fieldReservation(field)
  return string.sub(field, 1, string.find(field, L.holdFieldSep, 1, true) - 1)
end

-- The idempotency record: the prefix TypeScript made ("<requestHash>|<reservationId>|"), the claim's clock, and the
-- suffix TypeScript made ("|<nodeId>").
local function formatRecord(prefix, claimedAtMs, suffix)
  return prefix .. claimedAtMs .. suffix
end

-- A stock intent, under its op id in the item's intents hash:
-- "<location>|<delta>|<kind>|<decidedMs>|<nodeId>[|<safetyDelta>]" (kind L.intentSupply or L.intentDebit; the
-- safety delta only when the decision changed the safety stock). Split from the right: the location takes whatever
-- is left.
local INTENT_SEP = literal(L.intentSep)
local INTENT_PATTERN = '^(.+)' .. INTENT_SEP .. '(%-?%d+)' .. INTENT_SEP .. '(%a+)' .. INTENT_SEP .. '(%d+)' .. INTENT_SEP
  .. '([^' .. INTENT_SEP .. ']*)$'
local SAFETY_INTENT_PATTERN = string.sub(INTENT_PATTERN, 1, -2) .. INTENT_SEP .. '(%-?%d+)$'

local function formatIntent(location, delta, kind, decidedMs, nodeId, safetyDelta)
  local fields = { location, delta, kind, decidedMs, nodeId }
  if safetyDelta ~= 0 then fields[6] = safetyDelta end
  return table.concat(fields, L.intentSep)
end

-- location, delta, kind, decidedMs, nodeId, safetyDelta (0 when it has none); nil for a value not of the layout.
local function parseIntent(value)
  local location, delta, kind, decidedMs, nodeId, safetyDelta = string.match(value, SAFETY_INTENT_PATTERN)
  if not location then
    location, delta, kind, decidedMs, nodeId = string.match(value, INTENT_PATTERN)
    safetyDelta = '0'
  end
  if not location then return nil end
  return location, tonumber(delta), kind, tonumber(decidedMs), nodeId, tonumber(safetyDelta)
end

-- Keys of the item at 1-based index i, after `fixed` leading keys (3 keys an item: stock, holds, exp).
local function itemKeys(fixed, i)
  local base = fixed + (i - 1) * 3
  return KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
end

-- Releases every pending hold of the item whose expiry <= now, so availability is exact the instant a TTL
-- passes, and drops final-state tombstones whose retention ended. The work per call is bounded; a backlog
-- beyond the bound only under-reports availability (never oversells) until the next call.
local function expireDue(stockKey, holdsKey, expKey, now, retentionMs)
  local due = redis.call('ZRANGEBYSCORE', expKey, '-inf', now, 'LIMIT', 0, 1000)
  for _, field in ipairs(due) do
    local value = redis.call('HGET', holdsKey, field)
    local state, qty, expMs, version
    if value then state, qty, expMs, version = parseHold(value) end
    if state == H.pending then
      redis.call('HINCRBY', stockKey, reservedField(fieldLocation(field)), -qty)
      redis.call('HSET', holdsKey, field, formatHold(H.expired, qty, expMs, version + 1))
      redis.call('ZADD', expKey, now + retentionMs, field)
    else
      redis.call('HDEL', holdsKey, field)
      redis.call('ZREM', expKey, field)
    end
  end
end

-- What a reservation's holds say over its lines (item keys after `fixed` leading keys): how many are in each state
-- (by state code, and `missing`), their version (the highest: all carry the same one) and one hold's expiry.
-- `each(lineIndex, line, state)`, if given, is called for every hold found.
local function readHolds(fixed, reservationId, lines, each)
  local counts = { [H.pending] = 0, [H.confirmed] = 0, [H.released] = 0, [H.expired] = 0, missing = 0 }
  local version, expiresAt = nil, nil
  for n, line in ipairs(lines) do
    local _, holdsKey = itemKeys(fixed, line.item)
    local value = redis.call('HGET', holdsKey, holdField(reservationId, line.location))
    if not value then
      counts.missing = counts.missing + 1
    else
      local state, _, expMs, holdVersion = parseHold(value)
      counts[state] = counts[state] + 1
      version = math.max(version or 0, holdVersion)
      expiresAt = expMs
      if each then each(n, line, state) end
    end
  end
  return counts, version, expiresAt
end

-- Reads the line triples "itemIndex, location, quantity" that start at ARGV[first].
local function readLines(first, count)
  local lines = {}
  for n = 1, count do
    local a = first + (n - 1) * 3
    lines[n] = { item = tonumber(ARGV[a]), location = ARGV[a + 1], qty = tonumber(ARGV[a + 2]) }
  end
  return lines
end

-- Expires due holds on every item the lines touch (each item once).
local function expireItems(fixed, itemCount, now, retentionMs)
  for i = 1, itemCount do
    local stockKey, holdsKey, expKey = itemKeys(fixed, i)
    expireDue(stockKey, holdsKey, expKey, now, retentionMs)
  end
end

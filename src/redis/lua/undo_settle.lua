--[[
  undo_settle: compensation for a confirm or release whose record in PostgreSQL failed: the holds go back to
  pending (or to expired, if their TTL passed meanwhile). A confirmed hold's quantity is the units it sold (a
  partial confirm sells fewer than held): those go back to on-hand, the line's quantity back to reserved.
  Units the settle freed (a release's, a partial confirm's released part) are only held again while still free:
  re-holding units someone else took since would oversell. Then nothing is undone: a release stays released
  (safe: fewer holds); a confirm stays confirmed, and the sweeper expires the reservation PostgreSQL still has
  pending and gives its sold units back.
  Skipped when Redis was rebuilt since the decision.

  KEYS[1]    generation marker
  KEYS[2..]  per item: stock, holds, exp (ARGV[5] items)
  ARGV[1]    generation the settle decided under
  ARGV[2]    reservation id
  ARGV[3]    "confirm" or "release" (what is undone)
  ARGV[4]    tombstone retention, ms
  ARGV[5]    item count
  ARGV[6]    line count
  ARGV[7..]  per line: item index (1-based), location, quantity

  Returns {S.OK}, {S.STALE}, or {S.INSUFFICIENT} (freed units were taken since: nothing undone)
]]
--@include common
local FIXED = 1
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

local now = nowMs()
local confirm = ARGV[3] == 'confirm'
local from = confirm and H.confirmed or H.released
local lines = readLines(7, tonumber(ARGV[6]))

-- Units the settle freed (a release's, a partial confirm's released part) may have been taken since: re-holding
-- them would hold more than on-hand has, so then nothing is undone.
for _, line in ipairs(lines) do
  local stockKey, holdsKey = itemKeys(FIXED, line.item)
  local value = redis.call('HGET', holdsKey, holdField(ARGV[2], line.location))
  local state, qty
  if value then state, qty = parseHold(value) end
  if not confirm and state ~= from then return { S.INSUFFICIENT } end
  local freed = state == from and (confirm and line.qty - qty or line.qty) or 0
  if freed > 0 then
    local onHand = tonumber(redis.call('HGET', stockKey, onHandField(line.location)) or '0')
    local reserved = tonumber(redis.call('HGET', stockKey, reservedField(line.location)) or '0')
    if onHand - reserved < freed then return { S.INSUFFICIENT } end
  end
end

for _, line in ipairs(lines) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[2], line.location)
  local value = redis.call('HGET', holdsKey, field)
  if value then
    local state, qty, expMs, version = parseHold(value)
    if state == from then
      -- The settle made version + 1; the hold goes back to the version before it (or on to its expiry's).
      if confirm then redis.call('HINCRBY', stockKey, onHandField(line.location), qty) end
      if expMs > now then
        redis.call('HINCRBY', stockKey, reservedField(line.location), line.qty)
        redis.call('HSET', holdsKey, field, formatHold(H.pending, line.qty, expMs, version - 1))
        redis.call('ZADD', expKey, expMs, field)
      else
        redis.call('HSET', holdsKey, field, formatHold(H.expired, line.qty, expMs, version))
        redis.call('ZADD', expKey, now + tonumber(ARGV[4]), field)
      end
    end
  end
end
return { S.OK }

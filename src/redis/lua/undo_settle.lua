--[[
  undo_settle: compensation for a confirm or release whose record in PostgreSQL failed: the holds go back to
  pending (or to expired, if their TTL passed meanwhile). A release is only undone where the units are still
  free: re-holding units someone else took since would oversell; such a hold stays released (safe: fewer holds).
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

  Returns {S.OK}, {S.STALE}, or {S.INSUFFICIENT} (a release could not be undone)
]]
--@include common
local FIXED = 1
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

local now = nowMs()
local confirm = ARGV[3] == 'confirm'
local from = confirm and H.confirmed or H.released
local lines = readLines(7, tonumber(ARGV[6]))

if not confirm then
  for _, line in ipairs(lines) do
    local stockKey, holdsKey = itemKeys(FIXED, line.item)
    local value = redis.call('HGET', holdsKey, holdField(ARGV[2], line.location))
    local onHand = tonumber(redis.call('HGET', stockKey, onHandField(line.location)) or '0')
    local reserved = tonumber(redis.call('HGET', stockKey, reservedField(line.location)) or '0')
    if not value or parseHold(value) ~= from or onHand - reserved < line.qty then return { S.INSUFFICIENT } end
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
        redis.call('HINCRBY', stockKey, reservedField(line.location), qty)
        redis.call('HSET', holdsKey, field, formatHold(H.pending, qty, expMs, version - 1))
        redis.call('ZADD', expKey, expMs, field)
      else
        redis.call('HSET', holdsKey, field, formatHold(H.expired, qty, expMs, version))
        redis.call('ZADD', expKey, now + tonumber(ARGV[4]), field)
      end
    end
  end
end
return { S.OK }

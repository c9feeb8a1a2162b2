--[[
  expire: the sweeper's look at a reservation PostgreSQL still calls pending although its TTL passed.
  Expires its due holds and reports the state of each; in "revert" mode it also turns a confirmed hold that
  PostgreSQL never recorded (its process died before the commit; the sweeper has already recorded the
  reservation as expired) back into units on hand.

  KEYS[1]    generation marker
  KEYS[2..]  per item: stock, holds, exp (ARGV[4] items)
  ARGV[1]    reservation id
  ARGV[2]    "inspect" or "revert"
  ARGV[3]    tombstone retention, ms
  ARGV[4]    item count
  ARGV[5]    line count
  ARGV[6..]  per line: item index (1-based), location, quantity

  Returns {S.OK, generation, pending, confirmed, released, expired, missing, version, expiresAtMs} (counts of lines;
  the holds' version and expiry, '' when none was found: PostgreSQL records the expiry at them) or {S.NO_STATE}
]]
--@include common
local FIXED = 1
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local now = nowMs()
local retentionMs = tonumber(ARGV[3])
local revert = ARGV[2] == 'revert'
expireItems(FIXED, tonumber(ARGV[4]), now, retentionMs)

local counts = { p = 0, c = 0, r = 0, x = 0, missing = 0 }
local holdsVersion, holdsExpiry = nil, nil
for _, line in ipairs(readLines(6, tonumber(ARGV[5]))) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[1], line.location)
  local value = redis.call('HGET', holdsKey, field)
  if not value then
    counts.missing = counts.missing + 1
  else
    local state, qty, expMs, version = parseHold(value)
    holdsVersion = math.max(holdsVersion or 0, version)
    holdsExpiry = expMs
    if state == H.confirmed and revert then
      -- The confirm that PostgreSQL never recorded made version + 1, as the expiry PostgreSQL recorded did.
      redis.call('HINCRBY', stockKey, onHandField(line.location), qty)
      redis.call('HSET', holdsKey, field, formatHold(H.expired, qty, expMs, version))
      redis.call('ZADD', expKey, now + retentionMs, field)
      state = H.expired
    end
    counts[state] = counts[state] + 1
  end
end
return { S.OK, gen, counts.p, counts.c, counts.r, counts.x, counts.missing, holdsVersion or '', holdsExpiry or '' }

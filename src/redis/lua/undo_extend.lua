--[[
  undo_extend: compensation for an extension whose record in PostgreSQL failed: the holds still at the version
  the extension made go back to their previous expiry and version (then expire at once if it passed meanwhile).
  Skipped when Redis was rebuilt since the decision.

  KEYS[1]    generation marker
  KEYS[2]    the reservation's header
  KEYS[3..]  per item: stock, holds, exp (ARGV[6] items)
  ARGV[1]    generation the extension decided under
  ARGV[2]    reservation id
  ARGV[3]    the version the extension made
  ARGV[4]    the previous expiry, ms
  ARGV[5]    tombstone retention, ms
  ARGV[6]    item count
  ARGV[7]    line count
  ARGV[8..]  per line: item index (1-based), location, quantity

  Returns {S.OK} or {S.STALE}
]]
--@include common
local FIXED = 2
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

local decided = tonumber(ARGV[3])
local previous = tonumber(ARGV[4])
local retentionMs = tonumber(ARGV[5])
local lines = readLines(8, tonumber(ARGV[7]))

for _, line in ipairs(lines) do
  local _, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[2], line.location)
  local value = redis.call('HGET', holdsKey, field)
  if value then
    local state, qty, _, version = parseHold(value)
    -- Only the extension's own state is taken back: a later decision on the holds stands.
    if state == H.pending and version == decided then
      redis.call('HSET', holdsKey, field, formatHold(H.pending, qty, previous, decided - 1))
      redis.call('ZADD', expKey, previous, field)
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], L.headerExpires, previous)
  redis.call('PEXPIREAT', KEYS[2], previous + retentionMs)
end
expireItems(FIXED, tonumber(ARGV[6]), nowMs(), retentionMs)
return { S.OK }

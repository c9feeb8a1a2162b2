--[[
  extend: a pending, unexpired reservation now expires at now + ttl (Redis' clock; it may also shorten it). Due
  holds are expired first, as settle does, so extend racing expiry has one outcome: the clock here decides.

  KEYS[1]    generation marker (of the slot)
  KEYS[2]    the reservation's header, only when ARGV[7] is 'h' (on a cluster it lives in a slot of its own)
  then       per item: stock, holds, exp (ARGV[4] items)
  ARGV[1]    reservation id
  ARGV[2]    the new TTL, ms
  ARGV[3]    tombstone retention, ms
  ARGV[4]    item count
  ARGV[5]    line count
  ARGV[6]    the version an If-Match names ('' for none): any other version refuses the call (PRECONDITION)
  ARGV[7]    'h' when KEYS[2] is the header, else ''
  ARGV[8]    the new expiry, ms ('' for now + ttl: on a cluster the first slot's call sets it for the others)
  ARGV[9..]  per line: item index (1-based), location, quantity

  Returns
    {S.OK, generation, nowMs, version, expiresAtMs, previousExpiresAtMs}   version: the one the extension made
    {S.NO_STATE}
    {S.PRECONDITION, version}    ARGV[6] is not the reservation's version (nothing changed)
    {S.CONFIRMED, version} {S.RELEASED, version} {S.EXPIRED, version}   the reservation already ended
    {S.MISSING}                  a hold is unknown to Redis
]]
--@include common
local headerKey = ARGV[7] == 'h' and KEYS[2] or nil
local FIXED = headerKey and 2 or 1
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local now = nowMs()
local retentionMs = tonumber(ARGV[3])
local ifMatch = tonumber(ARGV[6])
local lines = readLines(9, tonumber(ARGV[5]))
expireItems(FIXED, tonumber(ARGV[4]), now, retentionMs)

local counts, version, previous = readHolds(FIXED, ARGV[1], lines)

if ifMatch and version and version ~= ifMatch then return { S.PRECONDITION, version } end
if counts.c > 0 then return { S.CONFIRMED, version } end
if counts.r > 0 then return { S.RELEASED, version } end
if counts.x > 0 then return { S.EXPIRED, version } end
if counts.missing > 0 then return { S.MISSING } end

local expiresAt = ARGV[8] ~= '' and tonumber(ARGV[8]) or now + tonumber(ARGV[2])
for _, line in ipairs(lines) do
  local _, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[1], line.location)
  local _, qty = parseHold(redis.call('HGET', holdsKey, field))
  redis.call('HSET', holdsKey, field, formatHold(H.pending, qty, expiresAt, version + 1))
  redis.call('ZADD', expKey, expiresAt, field)
end
-- The header (if still cached) says the new expiry and lives as long past it as reserve made it.
if headerKey and redis.call('EXISTS', headerKey) == 1 then
  redis.call('HSET', headerKey, L.headerExpires, expiresAt)
  redis.call('PEXPIREAT', headerKey, expiresAt + retentionMs)
end
return { S.OK, gen, now, version + 1, expiresAt, previous }

--[[
  settle: move every hold of a pending reservation to a final state: confirm (the units are sold and leave
  on-hand) or release (the units are available again). All lines or none. A confirm sells, of each line, the units
  ARGV names (a partial confirm: fewer than held, even none) and releases the rest, in this one step; the confirmed
  hold keeps the units it sold as its quantity (the units a revert or a reconciliation gives back to on-hand).

  KEYS[1]    generation marker
  KEYS[2..]  per item: stock, holds, exp (ARGV[4] items)
  ARGV[1]    reservation id
  ARGV[2]    "confirm" or "release"
  ARGV[3]    tombstone retention, ms
  ARGV[4]    item count
  ARGV[5]    line count
  ARGV[6]    the version an If-Match names ('' for none): any other version refuses the call (PRECONDITION)
  ARGV[7..]  per line: item index (1-based), location, quantity
  then       confirm only, per line: the units it sells (its quantity for a whole confirm)

  The reservation's version is its holds' (they carry the same one); every transition writes version + 1. The
  If-Match check comes after the duplicate check (a repeated call is answered as before, api.md) and before any
  other verdict, in this one step: no other decision can come between the check and the transition.

  Returns
    {S.OK, generation, nowMs, version, expiresAtMs}   version: the one the transition made; expiresAtMs: the
                                 holds' (an extension may have moved it since the caller read the header)
    {S.NO_STATE}
    {S.ALREADY, generation}      every hold is already in the requested state (a duplicate; nothing changed)
    {S.PRECONDITION, version}    ARGV[6] is not the reservation's version (nothing changed)
    {S.CONFIRMED, version} {S.RELEASED, version}   the reservation already ended otherwise
    {S.EXPIRED, version, expiresAtMs}
    {S.MISSING}                  a hold is unknown to Redis
    {S.INSUFFICIENT, lineIndex, onHand, ...} confirm only: on-hand no longer covers the units these lines sell
]]
--@include common
local FIXED = 1
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local now = nowMs()
local confirm = ARGV[2] == 'confirm'
local target = confirm and H.confirmed or H.released
local retentionMs = tonumber(ARGV[3])
local ifMatch = tonumber(ARGV[6])
local lines = readLines(7, tonumber(ARGV[5]))
local sells = {}
for n = 1, #lines do sells[n] = confirm and tonumber(ARGV[6 + 3 * #lines + n]) or 0 end
expireItems(FIXED, tonumber(ARGV[4]), now, retentionMs)

local short = {}
local counts, version, expiresAt = readHolds(FIXED, ARGV[1], lines, function(n, line, state)
  if state ~= H.pending or not confirm then return end
  local stockKey = itemKeys(FIXED, line.item)
  local onHand = tonumber(redis.call('HGET', stockKey, onHandField(line.location)) or '0')
  if onHand < sells[n] then
    short[#short + 1] = n
    short[#short + 1] = onHand
  end
end)

if counts[target] == #lines then return { S.ALREADY, gen } end
if ifMatch and version and version ~= ifMatch then return { S.PRECONDITION, version } end
if counts.c > 0 then return { S.CONFIRMED, version } end
if counts.r > 0 then return { S.RELEASED, version } end
if counts.x > 0 then return { S.EXPIRED, version, expiresAt } end
if counts.missing > 0 then return { S.MISSING } end
if #short > 0 then return { S.INSUFFICIENT, unpack(short) } end

for n, line in ipairs(lines) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[1], line.location)
  local _, qty, expMs = parseHold(redis.call('HGET', holdsKey, field))
  redis.call('HINCRBY', stockKey, reservedField(line.location), -qty)
  -- Not for 0: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
  if sells[n] > 0 then redis.call('HINCRBY', stockKey, onHandField(line.location), -sells[n]) end
  redis.call('HSET', holdsKey, field, formatHold(target, confirm and sells[n] or qty, expMs, version + 1))
  redis.call('ZADD', expKey, now + retentionMs, field)
end
return { S.OK, gen, now, version + 1, expiresAt }

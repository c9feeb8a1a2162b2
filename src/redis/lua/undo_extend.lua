--[[
  undo_extend: compensation for an extension whose record in PostgreSQL failed: the holds still at the version
  the extension made go back to their previous expiry and version (then expire at once if it passed meanwhile).
  An extension that shortened the holds may have seen them expire at its new time already: they are held again
  until their previous expiry, if it is still ahead and their units are still free (re-holding units taken since
  would oversell; then they stay expired). Skipped when Redis was rebuilt since the decision.

  KEYS[1]    generation marker (of the slot)
  KEYS[2]    the reservation's header, only when ARGV[9] is 'h'
  then       per item: stock, holds, exp (ARGV[7] items)
  ARGV[1]    generation the extension decided under
  ARGV[2]    reservation id
  ARGV[3]    the version the extension made
  ARGV[4]    the previous expiry, ms
  ARGV[5]    the expiry the extension set, ms
  ARGV[6]    tombstone retention, ms
  ARGV[7]    item count
  ARGV[8]    line count
  ARGV[9]    'h' when KEYS[2] is the header, else ''
  ARGV[10..] per line: item index (1-based), location, quantity

  Returns {S.OK}, {S.STALE}, or {S.EXPIRED} (holds it let expire could not be held again: they stay expired)
]]
--@include common
local headerKey = ARGV[9] == 'h' and KEYS[2] or nil
local FIXED = headerKey and 2 or 1
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

local decided = tonumber(ARGV[3])
local previous = tonumber(ARGV[4])
local extendedTo = tonumber(ARGV[5])
local retentionMs = tonumber(ARGV[6])
local itemCount = tonumber(ARGV[7])
local lines = readLines(10, tonumber(ARGV[8]))
local now = nowMs()
-- Every hold as of now, so that all of the reservation's are judged alike.
expireItems(FIXED, itemCount, now, retentionMs)

-- Only the extension's own state is taken back: a later decision on the holds stands.
local pending, expired = {}, {}
for _, line in ipairs(lines) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[2], line.location)
  local value = redis.call('HGET', holdsKey, field)
  if value then
    local state, qty, expMs, version = parseHold(value)
    local hold = { stockKey = stockKey, holdsKey = holdsKey, expKey = expKey, field = field, location = line.location, qty = qty }
    if state == H.pending and version == decided then
      pending[#pending + 1] = hold
    elseif state == H.expired and version == decided + 1 and expMs == extendedTo then
      expired[#expired + 1] = hold
    end
  end
end

for _, h in ipairs(pending) do
  redis.call('HSET', h.holdsKey, h.field, formatHold(H.pending, h.qty, previous, decided - 1))
  redis.call('ZADD', h.expKey, previous, h.field)
end

local rehold = #expired > 0 and previous > now
for _, h in ipairs(expired) do
  if rehold and availableAt(h.stockKey, h.location, true) < h.qty then rehold = false end
end
if rehold then
  for _, h in ipairs(expired) do
    redis.call('HINCRBY', h.stockKey, reservedField(h.location), h.qty)
    redis.call('HSET', h.holdsKey, h.field, formatHold(H.pending, h.qty, previous, decided - 1))
    redis.call('ZADD', h.expKey, previous, h.field)
  end
end

if headerKey and redis.call('EXISTS', headerKey) == 1 then
  redis.call('HSET', headerKey, L.headerExpires, previous)
  redis.call('PEXPIREAT', headerKey, previous + retentionMs)
end
expireItems(FIXED, itemCount, now, retentionMs)
if #expired > 0 and not rehold then return { S.EXPIRED } end
return { S.OK }

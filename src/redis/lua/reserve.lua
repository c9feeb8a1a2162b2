--[[
  reserve: hold every line of a new reservation, or nothing. A normal-priority line may take what is available at
  its location less the safety stock, a high-priority one all that is available (availableAt, includes/common.lua).

  KEYS[1]    generation marker
  KEYS[2]    idempotency record of the request's key
  KEYS[3]    the reservation's header
  KEYS[4]    the deciding node's lease
  KEYS[5..]  per item: stock, holds, exp (ARGV[6] items)
  ARGV[1]    reservation id
  ARGV[2]    ttl in ms
  ARGV[3]    idempotency record prefix "<requestHash>|<reservationId>|" (the script appends its clock, ms, then ARGV[9])
  ARGV[4]    how long the idempotency record lives, ms (the idempotency retention)
  ARGV[5]    tombstone retention, ms
  ARGV[6]    item count
  ARGV[7]    line count
  ARGV[8]    the header's body (JSON: reference, metadata, lines, tenant)
  ARGV[9]    idempotency record suffix "|<nodeId>" (src/redis/layout.ts recordSuffix)
  ARGV[10]   the lease's TTL, ms (src/jobs/node-lease.ts)
  ARGV[11]   the reservation's priority: 'high' or 'normal'
  ARGV[12..] per line: item index (1-based), location, quantity

  Returns
    {S.OK, generation, nowMs}
    {S.NO_STATE}
    {S.IDEMPOTENT, record}                      the key is taken; nothing was held
    {S.NOT_FOUND, lineIndex, ...}               lines whose item/location was never stocked
    {S.INSUFFICIENT, lineIndex, available, ...} lines that cannot be held (available: what this priority may take);
                                                nothing was held
]]
--@include common
local FIXED = 4
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local existing = redis.call('GET', KEYS[2])
if existing then return { S.IDEMPOTENT, existing } end

local now = nowMs()
local retentionMs = tonumber(ARGV[5])
local itemCount = tonumber(ARGV[6])
local high = ARGV[11] == 'high'
local lines = readLines(12, tonumber(ARGV[7]))
expireItems(FIXED, itemCount, now, retentionMs)

local missing, short = {}, {}
for n, line in ipairs(lines) do
  local stockKey = itemKeys(FIXED, line.item)
  if redis.call('HEXISTS', stockKey, onHandField(line.location)) == 0 then
    missing[#missing + 1] = n
  else
    local available = availableAt(stockKey, line.location, high)
    if available < line.qty then
      short[#short + 1] = n
      short[#short + 1] = available
    end
  end
end
if #missing > 0 then return { S.NOT_FOUND, unpack(missing) } end
if #short > 0 then return { S.INSUFFICIENT, unpack(short) } end

local expiresAt = now + tonumber(ARGV[2])
for _, line in ipairs(lines) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[1], line.location)
  redis.call('HINCRBY', stockKey, reservedField(line.location), line.qty)
  redis.call('HSET', holdsKey, field, formatHold(H.pending, line.qty, expiresAt))
  redis.call('ZADD', expKey, expiresAt, field)
end
redis.call('SET', KEYS[2], formatRecord(ARGV[3], now, ARGV[9]), 'PX', ARGV[4])
-- No claim without its node's lease: a node whose lease Redis lost (a flush) would otherwise look dead to a
-- duplicate until its next renewal.
redis.call('SET', KEYS[4], '1', 'PX', ARGV[10], 'NX')
redis.call('HSET', KEYS[3], L.headerBody, ARGV[8], L.headerCreated, now, L.headerExpires, expiresAt)
redis.call('PEXPIREAT', KEYS[3], expiresAt + retentionMs)
return { S.OK, gen, now }

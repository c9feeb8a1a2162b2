--[[
  reserve: hold every line of a new reservation (or of one slot group of it), or nothing. Lines without a location
  are allocated here, in the same step, over the candidate locations of their item (api.md, "Allocation across
  locations"). A normal-priority line may take what is available at a location less its safety stock, a
  high-priority one all that is available (availableAt, includes/common.lua).

  On a single Redis one call does it all: claims the idempotency key, holds every line, caches the header and keeps
  the node's lease. On Redis Cluster every call touches one slot, so src/redis/decisions.ts splits a reservation
  into calls of one slot each, each with the parts (ARGV[15]) whose keys are in that slot: the claim first, then the
  lines slot by slot, then the header (made whole in TypeScript); a refused call has the earlier ones undone.

  KEYS[1]    generation marker (of the slot)
  then, each only when its part is in ARGV[15], in this order: the idempotency record of the request's key ('c'),
             the reservation's header ('h' or 'H'), the deciding node's lease ('l')
  then       per item: stock, holds, exp (ARGV[6] items)
  ARGV[1]    reservation id
  ARGV[2]    ttl in ms
  ARGV[3]    idempotency record prefix "<requestHash>|<reservationId>|" (the script appends its clock, ms, then ARGV[9])
  ARGV[4]    how long the idempotency record lives, ms (the idempotency retention)
  ARGV[5]    tombstone retention, ms
  ARGV[6]    item count
  ARGV[7]    line count
  ARGV[8]    'h': the header's body without its lines, a JSON object (reference, metadata, tenant, allocation); the
             script writes it with the lines as held in front ({"lines":[...], ...}). 'H': the whole body.
  ARGV[9]    idempotency record suffix "|<nodeId>" (src/redis/layout.ts recordSuffix)
  ARGV[10]   the lease's TTL, ms (src/jobs/node-lease.ts)
  ARGV[11]   priority: 'high' or 'normal' (availableAt)
  ARGV[12]   allocation strategy: 'ordered', 'most_available', 'single_location', or '' (no allocation)
  ARGV[13]   split: '1' or '0'
  ARGV[14]   candidate count c (the request's allocation.locations; 0 when it has none)
  ARGV[15]   the parts of this call: 'c' claim the key, 'h' cache the header with the lines held here, 'H' cache
             the header given whole, 'l' keep the node's lease (the lines given are always held, unless 'd': decide
             only, hold nothing, for the slots after one that refused: they name their short lines without taking
             units a competing cart could have had)
  ARGV[16]   the holds' expiry, ms ('' for now + ttl: the first call of a reservation sets it for the others)
  ARGV[17..] c candidate locations, most preferred first; then ARGV[6] item ids (in item index order); then per
             line: item index (1-based), location ('' for a line to allocate), quantity

  Returns
    {S.OK, generation, nowMs, lineIndex, location, quantity, ...}  what is held: one triple per (line, location),
                                                in line order, the parts of a split line in allocation order (none
                                                for 'd')
    {S.NO_STATE}
    {S.IDEMPOTENT, record}                      the key is taken; nothing was held
    {S.NOT_FOUND, lineIndex, ...}               lines whose item/location was never stocked (an allocated line:
                                                its item is stocked at none of the candidates)
    {S.INSUFFICIENT, lineIndex, available, ...} lines that cannot be held; nothing was held (available: what this
                                                priority may take; an allocated line's: what its strategy could find)
]]
--@include common
local parts = ARGV[15]
local nextKey = 2
local function partKey(letters)
  if not string.find(parts, '[' .. letters .. ']') then return nil end
  nextKey = nextKey + 1
  return KEYS[nextKey - 1]
end
local claimKey, headerKey, leaseKey = partKey('c'), partKey('hH'), partKey('l')
local FIXED = nextKey - 1
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

if claimKey then
  local existing = redis.call('GET', claimKey)
  if existing then return { S.IDEMPOTENT, existing } end
end

local now = nowMs()
local retentionMs = tonumber(ARGV[5])
local itemCount = tonumber(ARGV[6])
local high = ARGV[11] == 'high'
local strategy = ARGV[12]
local split = ARGV[13] == '1'
local candidateCount = tonumber(ARGV[14])
local candidates = {}
for i = 1, candidateCount do candidates[i] = ARGV[16 + i] end
local itemIds = {}
for i = 1, itemCount do itemIds[i] = ARGV[16 + candidateCount + i] end
local lines = readLines(17 + candidateCount + itemCount, tonumber(ARGV[7]))
expireItems(FIXED, itemCount, now, retentionMs)

-- An allocated line's options: the candidates its item is stocked at, each with what it can give, in preference
-- order (most_available: most available first, ties in candidate order).
local function optionsOf(stockKey)
  local names = candidateCount > 0 and candidates or stockedLocations(stockKey)
  local options = {}
  for rank, location in ipairs(names) do
    if stockedAt(stockKey, location) then
      options[#options + 1] = { location = location, available = availableAt(stockKey, location, high), rank = rank }
    end
  end
  if strategy == 'most_available' then
    table.sort(options, function(a, b)
      if a.available ~= b.available then return a.available > b.available end
      return a.rank < b.rank
    end)
  end
  return options
end

-- Where one allocated line is held ({location, qty} parts), or nil and the units its strategy could find.
local function allocateLine(options, qty)
  if split then
    local parts, left, found = {}, qty, 0
    for _, o in ipairs(options) do
      local take = math.min(o.available, left)
      if take > 0 then
        parts[#parts + 1] = { location = o.location, qty = take }
        left = left - take
      end
      found = found + o.available
    end
    if left == 0 then return parts end
    return nil, found
  end
  local most = 0
  for _, o in ipairs(options) do
    if o.available >= qty then return { { location = o.location, qty = qty } } end
    most = math.max(most, o.available)
  end
  return nil, most
end

-- single_location: every allocated line from the first candidate that can hold them all. Returns that
-- location, or nil and, per allocated line, what the best candidate has: the candidate short by the fewest units
-- over all allocated lines (the earlier one on a tie).
local function singleLocation(allocated)
  local best, bestShortfall, bestFigures
  for _, location in ipairs(candidates) do
    local shortfall, figures = 0, {}
    for _, n in ipairs(allocated) do
      local line = lines[n]
      local stockKey = itemKeys(FIXED, line.item)
      local available = stockedAt(stockKey, location) and availableAt(stockKey, location, high) or 0
      figures[n] = available
      shortfall = shortfall + math.max(0, line.qty - available)
    end
    if shortfall == 0 then return location end
    if not best or shortfall < bestShortfall then best, bestShortfall, bestFigures = location, shortfall, figures end
  end
  return nil, bestFigures
end

local missing, shortBy, allocated = {}, {}, {}
for n, line in ipairs(lines) do
  local stockKey = itemKeys(FIXED, line.item)
  if line.location ~= '' then
    if not stockedAt(stockKey, line.location) then
      missing[#missing + 1] = n
    else
      local available = availableAt(stockKey, line.location, high)
      if available < line.qty then shortBy[n] = available end
    end
  else
    line.options = optionsOf(stockKey)
    if #line.options == 0 then missing[#missing + 1] = n else allocated[#allocated + 1] = n end
  end
end
if #missing > 0 then return { S.NOT_FOUND, unpack(missing) } end

if strategy == 'single_location' and #allocated > 0 then
  local location, figures = singleLocation(allocated)
  for _, n in ipairs(allocated) do
    local line = lines[n]
    if location then
      line.parts = { { location = location, qty = line.qty } }
    elseif figures[n] < line.qty then
      shortBy[n] = figures[n]
    end
  end
else
  for _, n in ipairs(allocated) do
    local line = lines[n]
    local parts, found = allocateLine(line.options, line.qty)
    if parts then line.parts = parts else shortBy[n] = found end
  end
end

local short = {}
for n = 1, #lines do
  if shortBy[n] then
    short[#short + 1] = n
    short[#short + 1] = shortBy[n]
  end
end
if #short > 0 then return { S.INSUFFICIENT, unpack(short) } end
if string.find(parts, 'd', 1, true) then return { S.OK, gen, now } end

local expiresAt = ARGV[16] ~= '' and tonumber(ARGV[16]) or now + tonumber(ARGV[2])
local held, heldJson = { S.OK, gen, now }, {}
for n, line in ipairs(lines) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  for _, part in ipairs(line.parts or { { location = line.location, qty = line.qty } }) do
    local field = holdField(ARGV[1], part.location)
    redis.call('HINCRBY', stockKey, reservedField(part.location), part.qty)
    redis.call('HSET', holdsKey, field, formatHold(H.pending, part.qty, expiresAt, 1))
    redis.call('ZADD', expKey, expiresAt, field)
    held[#held + 1] = n
    held[#held + 1] = part.location
    held[#held + 1] = part.qty
    heldJson[#heldJson + 1] = '{"itemId":' .. cjson.encode(itemIds[line.item]) .. ',"location":' .. cjson.encode(part.location)
      .. ',"quantity":' .. part.qty .. '}'
  end
end
if claimKey then redis.call('SET', claimKey, formatRecord(ARGV[3], now, ARGV[9]), 'PX', ARGV[4]) end
-- No claim without its node's lease: a node whose lease Redis lost (a flush) would otherwise look dead to a
-- duplicate until its next renewal.
if leaseKey then redis.call('SET', leaseKey, '1', 'PX', ARGV[10], 'NX') end
if headerKey then
  -- The header holds the lines as held, so confirm, release and expiry act on exactly what was allocated.
  local body = ARGV[8]
  if string.find(parts, 'h', 1, true) then body = '{"lines":[' .. table.concat(heldJson, ',') .. '],' .. string.sub(ARGV[8], 2) end
  -- Created when the first call decided: its clock + ttl is the expiry every later call is given.
  redis.call('HSET', headerKey, L.headerBody, body, L.headerCreated, expiresAt - tonumber(ARGV[2]), L.headerExpires, expiresAt)
  redis.call('PEXPIREAT', headerKey, expiresAt + retentionMs)
end
return held

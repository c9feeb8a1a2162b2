--[[
  undo_reserve: compensation for a reserve whose record in PostgreSQL failed or lost the idempotency race.
  Removes the reservation's holds and frees its idempotency key, unless Redis was rebuilt since the decision
  (the rebuild came from PostgreSQL, which never had these holds).

  KEYS[1]    generation marker (of the slot)
  then, each only when its part is in ARGV[6], in this order: the idempotency record of the request's key ('c'),
             the reservation's header ('h')
  then       per item: stock, holds, exp (ARGV[4] items)
  ARGV[1]    generation the reserve decided under
  ARGV[2]    reservation id
  ARGV[3]    the idempotency record prefix the reserve stored (the record is deleted only if it is still ours)
  ARGV[4]    item count
  ARGV[5]    line count
  ARGV[6]    the parts of this call ('c', 'h'; reserve.lua: on a cluster each slot of a reservation is undone apart)
  ARGV[7..]  per line: item index (1-based), location, quantity

  Returns {S.OK} or {S.STALE}
]]
--@include common
local parts = ARGV[6]
local nextKey = 2
local function partKey(letter)
  if not string.find(parts, letter, 1, true) then return nil end
  nextKey = nextKey + 1
  return KEYS[nextKey - 1]
end
local claimKey, headerKey = partKey('c'), partKey('h')
local FIXED = nextKey - 1
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

for _, line in ipairs(readLines(7, tonumber(ARGV[5]))) do
  local stockKey, holdsKey, expKey = itemKeys(FIXED, line.item)
  local field = holdField(ARGV[2], line.location)
  local value = redis.call('HGET', holdsKey, field)
  if value then
    local state, qty = parseHold(value)
    -- An expired hold already gave its units back; a pending one gives them back now.
    if state == H.pending then redis.call('HINCRBY', stockKey, reservedField(line.location), -qty) end
    redis.call('HDEL', holdsKey, field)
    redis.call('ZREM', expKey, field)
  end
end
if claimKey then
  local record = redis.call('GET', claimKey)
  if record and string.sub(record, 1, #ARGV[3]) == ARGV[3] then redis.call('DEL', claimKey) end
end
if headerKey then redis.call('DEL', headerKey) end
return { S.OK }

--[[
  undo_reserve: compensation for a reserve whose record in PostgreSQL failed or lost the idempotency race.
  Removes the reservation's holds and frees its idempotency key, unless Redis was rebuilt since the decision
  (the rebuild came from PostgreSQL, which never had these holds).

  KEYS[1]    generation marker
  KEYS[2]    idempotency record of the request's key
  KEYS[3]    the reservation's header
  KEYS[4..]  per item: stock, holds, exp (ARGV[4] items)
  ARGV[1]    generation the reserve decided under
  ARGV[2]    reservation id
  ARGV[3]    the idempotency record prefix the reserve stored (the record is deleted only if it is still ours)
  ARGV[4]    item count
  ARGV[5]    line count
  ARGV[6..]  per line: item index (1-based), location, quantity

  Returns {S.OK} or {S.STALE}
]]
--@include common
local FIXED = 3
if generation(KEYS[1]) ~= ARGV[1] then return { S.STALE } end

for _, line in ipairs(readLines(6, tonumber(ARGV[5]))) do
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
local record = redis.call('GET', KEYS[2])
if record and string.sub(record, 1, #ARGV[3]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
return { S.OK }

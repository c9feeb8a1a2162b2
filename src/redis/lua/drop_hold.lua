--[[
  drop_hold: reconciliation's repair of a hold PostgreSQL never recorded (its request died between the decision
  and the commit): the units are freed now instead of at the TTL. Dropping a hold can never oversell.

  KEYS[1]  generation marker
  KEYS[2]  the item's stock
  KEYS[3]  the item's holds
  KEYS[4]  the item's exp
  ARGV[1]  hold field ("<reservationId>:<location>")

  Returns {S.OK} (dropped), {S.ALREADY} (no pending hold by that name any more) or {S.NO_STATE}
]]
--@include common
if not generation(KEYS[1]) then return { S.NO_STATE } end
local value = redis.call('HGET', KEYS[3], ARGV[1])
if not value then return { S.ALREADY } end
local state, qty = parseHold(value)
if state ~= H.pending then return { S.ALREADY } end
redis.call('HINCRBY', KEYS[2], reservedField(fieldLocation(ARGV[1])), -qty)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return { S.OK }

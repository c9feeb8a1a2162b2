--[[
  lease: takes, renews or gives up a lease one owner at a time holds under one key (src/redis/lease.ts: the event
  relays', one active relay per transport across the nodes, and the reconciler's, one pass at a time). Only its
  owner renews or gives it up, so an owner whose lease lapsed and was taken by another cannot take it back by
  renewing.

  KEYS[1]  the lease key
  ARGV[1]  the owner's token
  ARGV[2]  the lease's time to live in milliseconds; 0 gives it up

  Returns {S.OK} (held by this owner now, taken or renewed; or given up) or {S.ALREADY} (another owner holds it, or
  there was nothing to give up; nothing done)
]]
local owner = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  if owner ~= ARGV[1] then return { S.ALREADY } end
  redis.call('DEL', KEYS[1])
  return { S.OK }
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return { S.OK }
end
if owner ~= ARGV[1] then return { S.ALREADY } end
redis.call('PEXPIRE', KEYS[1], ttl)
return { S.OK }

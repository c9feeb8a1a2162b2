--[[
  forget_claim: frees an idempotency key whose first request never committed (it failed without cleaning up, or
  its process died): deletes the record only if it is still exactly the one that was judged stale.

  KEYS[1]  idempotency record
  ARGV[1]  the record's value as read

  Returns {S.OK} (deleted) or {S.ALREADY} (the record changed meanwhile; nothing done)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return { S.ALREADY } end
redis.call('DEL', KEYS[1])
return { S.OK }

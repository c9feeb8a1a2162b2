--[[
  forget_claim: frees an idempotency key held by one attempt PostgreSQL never committed (it failed, or its process
  died), or marks that attempt's outcome as unknown: acts only while the record is still that attempt's, so a
  later attempt's claim (another reservation id) is never touched.

  KEYS[1]  idempotency record
  ARGV[1]  the attempt's record prefix "<requestHash>|<reservationId>|" (src/service/idempotency.ts)
  ARGV[2]  '' to delete the record, else the value to replace it with (its TTL kept)

  Returns {S.OK} (done) or {S.ALREADY} (the record is gone or belongs to another attempt; nothing done)
]]
local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, #ARGV[1]) ~= ARGV[1] then return { S.ALREADY } end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return { S.OK }

--[[
  server_check: run first on every connection to a single Redis (src/redis/server-check.ts). The state is trusted
  only on the server it was rebuilt on: one restarted from its files (RDB, or AOF that fsyncs once a second), or a
  replica promoted in its place (Sentinel, a managed Redis' failover), may lack holds its predecessor acknowledged
  and PostgreSQL recorded, so its stock would read higher than the truth and sell units twice. Such a state is
  dropped: every script answers NO_STATE until a rebuild from PostgreSQL.

  KEYS[1]  generation marker
  KEYS[2]  the server the state was rebuilt on (its run_id)
  ARGV[1]  none: the script takes no arguments

  Returns {S.OK, verdict}: 'same' (rebuilt on this server), 'none' (no state to judge), 'adopted' (state from
  before servers were recorded: this one is taken as its own), 'dropped', or 'unknown' (the user may not run INFO).
]]
--@include server
local runId = serverRunId()
if not runId then return { S.OK, 'unknown' } end
local owner = redis.call('GET', KEYS[2])
if owner == runId then return { S.OK, 'same' } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { S.OK, 'none' } end
if not owner then
  redis.call('SET', KEYS[2], runId)
  return { S.OK, 'adopted' }
end
redis.call('DEL', KEYS[1])
return { S.OK, 'dropped' }

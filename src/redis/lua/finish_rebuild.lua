--[[
  finish_rebuild: sets the generation marker, but only if the rebuild's token survived (a flush while the rebuild
  was writing would leave a partial state; then the rebuild starts over).

  KEYS[1]  generation marker
  KEYS[2]  rebuilding token
  KEYS[3]  on a single Redis: the server the state is rebuilt on (server_check.lua)
  ARGV[1]  the token
  ARGV[2]  the new generation
  ARGV[3]  '1' on a cluster: the marker also names this master, and its process where the user may run INFO
           (`<generation>@<node id>@<run_id>`: includes/common.lua, generation; cluster_server_check.lua)
  ARGV[4]  the run_id of the server (on a cluster: of the slot's master) the rebuild began writing to ('' if the user
           may not run INFO). Another one now (a failover, or a restart from its files, mid-rebuild) may lack part of
           what was written: the rebuild starts over.

  Returns {S.OK} or {S.STALE}
]]
--@include server
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return { S.STALE } end
local runId = serverRunId()
if (runId or '') ~= ARGV[4] then return { S.STALE } end
local marker = ARGV[2]
if ARGV[3] == '1' then
  marker = marker .. '@' .. redis.call('CLUSTER', 'MYID') .. (runId and '@' .. runId or '')
elseif runId then
  redis.call('SET', KEYS[3], runId)
else
  redis.call('DEL', KEYS[3])
end
redis.call('SET', KEYS[1], marker)
redis.call('DEL', KEYS[2])
return { S.OK }

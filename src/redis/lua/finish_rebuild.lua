--[[
  finish_rebuild: sets the generation marker, but only if the rebuild's token survived (a flush while the rebuild
  was writing would leave a partial state; then the rebuild starts over).

  KEYS[1]  generation marker
  KEYS[2]  rebuilding token
  KEYS[3]  on a single Redis: the server the state is rebuilt on (server_check.lua)
  ARGV[1]  the token
  ARGV[2]  the new generation
  ARGV[3]  '1' on a cluster: the marker also names this master (includes/common.lua, generation)
  ARGV[4]  on a single Redis: the run_id of the server the rebuild began writing to. Another one now (a failover
           mid-rebuild) may lack part of what was written: the rebuild starts over.

  Returns {S.OK} or {S.STALE}
]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return { S.STALE } end
local marker = ARGV[2]
if ARGV[3] == '1' then
  marker = marker .. '@' .. redis.call('CLUSTER', 'MYID')
else
  local runId = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if runId ~= ARGV[4] then return { S.STALE } end
  redis.call('SET', KEYS[3], runId)
end
redis.call('SET', KEYS[1], marker)
redis.call('DEL', KEYS[2])
return { S.OK }

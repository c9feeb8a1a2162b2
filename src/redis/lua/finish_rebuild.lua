--[[
  finish_rebuild: sets the generation marker, but only if the rebuild's token survived (a flush while the rebuild
  was writing would leave a partial state; then the rebuild starts over).

  KEYS[1]  generation marker
  KEYS[2]  rebuilding token
  ARGV[1]  the token
  ARGV[2]  the new generation
  ARGV[3]  '1' on a cluster: the marker also names this master (includes/common.lua, generation)

  Returns {S.OK} or {S.STALE}
]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return { S.STALE } end
local marker = ARGV[2]
if ARGV[3] == '1' then marker = marker .. '@' .. redis.call('CLUSTER', 'MYID') end
redis.call('SET', KEYS[1], marker)
redis.call('DEL', KEYS[2])
return { S.OK }

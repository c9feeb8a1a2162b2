--[[
  cluster_server_check: run first on every connection to a Redis Cluster node (src/redis/server-check.ts). A master
  restarted from its own files (RDB, or AOF that fsyncs once a second) before a replica took over keeps its node
  id, so the markers' node id (includes/common.lua, generation) cannot tell it from the process they were written
  on; yet it may lack holds that process acknowledged and PostgreSQL recorded, and would sell units twice. So a
  marker also names the process (INFO's run_id, drawn anew at every start): this node's markers written on another
  process of it are dropped, and their slots answer NO_STATE until a rebuild from PostgreSQL.

  KEYS[1]    none: the markers are found from this node's slots (CLUSTER SLOTS), on many slots at once
  ARGV[1]    the markers' key before the hash tag (the key prefix)
  ARGV[2]    ... and after it (the marker's name)
  ARGV[3]    every slot's hash tag, in slot order, separated by ','

  Returns {S.OK, verdict}: 'dropped' (a marker of this node was written by another of its processes), else
  'adopted' (markers from before run_ids were kept: this process is taken as theirs), 'same', 'none' (no marker of
  this node's), or 'unknown' (the user may not run INFO: a restart cannot be told).
]]
--@include common
--@include server
local runId = serverRunId()
if not runId then return { S.OK, 'unknown' } end
local myId = redis.call('CLUSTER', 'MYID')
local tags = {}
for tag in string.gmatch(ARGV[3], '[^,]+') do tags[#tags + 1] = tag end
local seen = { same = 0, adopted = 0, dropped = 0 }
for _, range in ipairs(redis.call('CLUSTER', 'SLOTS')) do
  if range[3][3] == myId then
    for slot = range[1], range[2] do
      local key = ARGV[1] .. '{' .. tags[slot + 1] .. '}' .. ARGV[2]
      local value = redis.call('GET', key)
      local at = value and string.find(value, '@', 1, true)
      -- A marker of another node is not this check's: generation() reads it as missing already.
      if at and markerNode(value, at) == myId then
        local written = markerRunId(value, at)
        if written == runId then
          seen.same = seen.same + 1
        elseif not written then
          redis.call('SET', key, value .. '@' .. runId)
          seen.adopted = seen.adopted + 1
        else
          redis.call('DEL', key)
          seen.dropped = seen.dropped + 1
        end
      end
    end
  end
end
if seen.dropped > 0 then return { S.OK, 'dropped' } end
if seen.adopted > 0 then return { S.OK, 'adopted' } end
return { S.OK, seen.same > 0 and 'same' or 'none' }

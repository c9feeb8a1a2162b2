-- This server's run_id (INFO server's: every start of a Redis process draws a new one), or nil where the user may
-- not run INFO (an ACL without @dangerous): then a server's change cannot be told (src/redis/server-check.ts).
local function serverRunId()
  local info = redis.pcall('INFO', 'server')
  if type(info) ~= 'string' then return nil end
  return string.match(info, 'run_id:(%x+)')
end

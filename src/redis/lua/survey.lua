--[[
  survey: reconciliation's look at many items of one group at once (src/jobs/reconcile.ts), each as a decision
  would see it: its holds whose TTL passed released first, as availability.lua does. One call for many items, not
  three commands an item: a pass reads every item of the catalog, most of them idle.

  KEYS[1]    generation marker
  KEYS[2..]  four keys an item: its stock, holds, exp, intents
  ARGV[1]    tombstone retention, ms
  ARGV[2]    the most hold fields an item may have for its pending holds to be listed here. An item with more is
             only counted: its caller reads its holds in steps (HSCAN), so that this script stays short. -1: read
             only the intents (stock, count and holds come back empty), as nothing else is asked for then.

  Returns {S.OK, generation, items}, an item being {stock fields (HGETALL), intents (HGETALL), count of hold
  fields, pending holds' fields (empty where not listed)}; or {S.NO_STATE}
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end

local now, retentionMs, listed = nowMs(), tonumber(ARGV[1]), tonumber(ARGV[2])
local items = {}
for base = 2, #KEYS, 4 do
  local stockKey, holdsKey, expKey, intentsKey = KEYS[base], KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  local stock, count, pending = {}, 0, {}
  if listed >= 0 then
    expireDue(stockKey, holdsKey, expKey, now, retentionMs)
    stock = redis.call('HGETALL', stockKey)
    count = redis.call('HLEN', holdsKey)
    if count > 0 and count <= listed then
      local holds = redis.call('HGETALL', holdsKey)
      for i = 1, #holds, 2 do
        if parseHold(holds[i + 1]) == H.pending then pending[#pending + 1] = holds[i] end
      end
    end
  end
  items[#items + 1] = { stock, redis.call('HGETALL', intentsKey), count, pending }
end
return { S.OK, gen, items }

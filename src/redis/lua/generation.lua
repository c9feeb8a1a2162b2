--[[
  generation: the generation a slot's state was rebuilt from (recovery asks every slot before it calls Redis ready).

  KEYS[1]  generation marker (of the slot)
  ARGV[1]  none: the script takes no arguments

  Returns {S.OK, generation} or {S.NO_STATE} (missing, or written for a master that no longer holds the slot)
]]
--@include common
local gen = generation(KEYS[1])
if not gen then return { S.NO_STATE } end
return { S.OK, gen }

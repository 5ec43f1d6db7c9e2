#!lua name=streamshop_read_v1
--[[
streamshop_states_v1: the decision states a command reads, in one call: HGETALL of every
KEYS[i], as a list of flat field/value lists (an absent hash gives an empty list). Read
only; one command instead of a pipeline of HGETALLs leaves the client a single request to
build and a single reply to parse. Its own library, so the append library can be replaced
without it and the other way round.
]]
local function states(keys, args)
  local out = {}
  for i, key in ipairs(keys) do out[i] = redis.call('HGETALL', key) end
  return out
end

redis.register_function{function_name = 'streamshop_states_v1', callback = states, flags = {'no-writes'}}

#!lua name=streamshop_effects_v1
--[[
streamshop_effects_v1: the counter effects an event has on aggregates in another hash slot
than its own (an order's payment, expiry or cancellation on its products' "stock" and
"reserved"), applied once per event and slot. KEYS[1] is the marker of (event, slot);
KEYS[2..] the state hashes; ARGV[1] = JSON {ttl, incr = [{k, f = {field = delta}}]}.
Returns "ok", or "dup" when the marker exists (applied already: nothing is written).
Every hash written gets its "w" incremented, as an append's do.
]]
local function effects(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then return 'dup' end
  local req = cjson.decode(args[1])
  for _, c in ipairs(req.incr) do
    for f, d in pairs(c.f) do redis.call('HINCRBY', keys[c.k], f, d) end
    redis.call('HINCRBY', keys[c.k], 'w', 1)
  end
  redis.call('SET', keys[1], '1', 'EX', req.ttl)
  return 'ok'
end

redis.register_function('streamshop_effects_v1', effects)

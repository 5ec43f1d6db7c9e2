#!lua name=streamshop_slots_v1
--[[
streamshop_slots_v1: the single-slot steps with which a command whose append would span
hash slots on a Redis Cluster is split (app/commands/slots.py, issue #19).

streamshop_count_v1: count a new member into an aggregate of another slot *before* the
member's own append (a product into its category, a category under its parent), so the
aggregate cannot be deleted meanwhile. KEYS[1] = the marker of (event, step), KEYS[2] = the
state hash; ARGV[1] = JSON {ttl, a = aggregate, incr = {field = delta}, live = bool}. With
"live" the hash must exist (v >= 1) and have no "deleted" flag, as an append's "exists" and
"absent deleted" check it. Returns "ok", "dup" (marker found: nothing written) or
{err = "missing", aggregate} (nothing written). Bumps "w" as an append does.

streamshop_reserve_v1: take a unique name for an owner before the owner's append (KEYS[1]
the reservation, ARGV[1] the owner): "new" when this call took it, "ok" when the owner
held it already, else {err = "unique", owner}.

streamshop_unreserve_v1: free a unique name only while the owner holds it (KEYS[1],
ARGV[1] the owner): 1 when freed, 0 otherwise.
]]

local function count(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then return 'dup' end
  local req = cjson.decode(args[1])
  if req.live then
    local v = tonumber(redis.call('HGET', keys[2], 'v') or '0') or 0
    local deleted = redis.call('HGET', keys[2], 'deleted')
    if v < 1 or (deleted and deleted ~= '' and deleted ~= '0') then
      return cjson.encode({err = 'missing', aggregate = req.a})
    end
  end
  for f, d in pairs(req.incr) do redis.call('HINCRBY', keys[2], f, d) end
  redis.call('HINCRBY', keys[2], 'w', 1)
  redis.call('SET', keys[1], '1', 'EX', req.ttl)
  return 'ok'
end

local function reserve(keys, args)
  local owner = redis.call('GET', keys[1])
  if owner and owner ~= args[1] then return cjson.encode({err = 'unique', owner = owner}) end
  if owner then return 'ok' end
  redis.call('SET', keys[1], args[1])
  return 'new'
end

local function unreserve(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

redis.register_function('streamshop_count_v1', count)
redis.register_function('streamshop_reserve_v1', reserve)
redis.register_function('streamshop_unreserve_v1', unreserve)

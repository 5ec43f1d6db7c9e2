#!lua name=streamshop_v2
--[[
The atomic conditional append. One FCALL = one decision: every check runs before the
first write (a Redis script has no rollback), then the state updates, the XADDs and the
idempotency record. KEYS holds every key it touches; ARGV[1] is a JSON request:

  idem     = {k, ttl, result, parts}  idempotency record (KEYS index), replayed if present
  expect   = [{k, a, v}]              state KEYS[k] of aggregate a must have version v (0: absent)
  exists   = [{k, a}]                 aggregate must exist (v >= 1)
  absent   = [{k, a, f}]              field f of the state must be unset, "" or "0" (e.g. "deleted")
  guards   = [{k, a, f, ge}]          numeric field f must be >= ge
  reserve  = [{k, kind, owner}]       unique key must be free or already owned by owner
  release  = [k...]                   unique keys to free
  state    = [{k, set = {...}, incr = {...}}]
  events   = [{s, k, f = [10 fields]}] stream KEYS[s]; aggregate state KEYS[k]; seq inserted
Returns JSON: {"ok": [entry ids]} | {"dup": stored} | {"err": kind, ...}.

Every state hash an append writes gets its field "w" (writes) incremented: the rebuild of
the decision state (streamshop_put_state_v2, below) overwrites a hash only when "w" is
still what it read before folding the log, so a concurrent append always wins.
]]

local function num(v)
  if v == false or v == nil then return 0 end
  return tonumber(v) or 0
end

local function append(keys, args)
  local req = cjson.decode(args[1])

  if req.idem then
    local stored = redis.call('GET', keys[req.idem.k])
    if stored then return cjson.encode({dup = cjson.decode(stored)}) end
  end

  for _, c in ipairs(req.expect or {}) do
    local v = num(redis.call('HGET', keys[c.k], 'v'))
    if v ~= c.v then
      return cjson.encode({err = 'conflict', aggregate = c.a, expected = c.v, actual = v})
    end
  end
  for _, c in ipairs(req.exists or {}) do
    if num(redis.call('HGET', keys[c.k], 'v')) < 1 then
      return cjson.encode({err = 'missing', aggregate = c.a})
    end
  end
  for _, c in ipairs(req.absent or {}) do
    local flag = redis.call('HGET', keys[c.k], c.f)
    if flag and flag ~= '' and flag ~= '0' then
      return cjson.encode({err = 'missing', aggregate = c.a, field = c.f})
    end
  end
  for _, g in ipairs(req.guards or {}) do
    local have = num(redis.call('HGET', keys[g.k], g.f))
    if have < g.ge then
      return cjson.encode({err = 'guard', aggregate = g.a, field = g.f, actual = have, required = g.ge})
    end
  end
  for _, r in ipairs(req.reserve or {}) do
    local owner = redis.call('GET', keys[r.k])
    if owner and owner ~= r.owner then
      return cjson.encode({err = 'unique', kind = r.kind, owner = owner})
    end
  end

  -- all checks passed: from here on, only writes
  for _, r in ipairs(req.reserve or {}) do redis.call('SET', keys[r.k], r.owner) end
  for _, k in ipairs(req.release or {}) do redis.call('DEL', keys[k]) end
  local written = {}
  for _, s in ipairs(req.state or {}) do
    local key = keys[s.k]
    for f, v in pairs(s.set or {}) do redis.call('HSET', key, f, v) end
    for f, v in pairs(s.incr or {}) do redis.call('HINCRBY', key, f, v) end
    written[key] = true
  end

  local versions = {}
  local ids = {}
  for i, e in ipairs(req.events or {}) do
    local skey = keys[e.k]
    local v = versions[skey]
    if v == nil then v = num(redis.call('HGET', skey, 'v')) end
    v = v + 1
    versions[skey] = v
    local f = e.f
    ids[i] = redis.call('XADD', keys[e.s], '*',
      'id', f[1], 'type', f[2], 'schema', f[3], 'aggregate', f[4], 'seq', tostring(v),
      'at', f[5], 'actor', f[6], 'correlation', f[7], 'causation', f[8], 'source', f[9],
      'data', f[10])
  end
  for skey, v in pairs(versions) do
    redis.call('HSET', skey, 'v', v)
    written[skey] = true
  end
  for key, _ in pairs(written) do redis.call('HINCRBY', key, 'w', 1) end

  if req.idem then
    redis.call('SET', keys[req.idem.k], cjson.encode({ids = ids, parts = req.idem.parts, result = req.idem.result}),
      'EX', req.idem.ttl)
  end
  return cjson.encode({ok = ids})
end

--[[
streamshop_put_state_v2: replace one aggregate's decision state by its fold of the log.
KEYS[1] = the state hash; ARGV[1] = JSON {w = writes seen before folding ("" when the hash
was absent), fields = {field = value} (empty: delete the hash)}. Writes only when no append
touched the hash since (its "w" unchanged); keeps "w" going up, so a later put with an old
snapshot still refuses. Returns "ok" or "conflict".
]]
local function put_state(keys, args)
  local req = cjson.decode(args[1])
  local w = redis.call('HGET', keys[1], 'w')
  if (w or '') ~= req.w then return 'conflict' end
  redis.call('DEL', keys[1])
  local any = false
  for f, v in pairs(req.fields) do
    redis.call('HSET', keys[1], f, v)
    any = true
  end
  if any then redis.call('HSET', keys[1], 'w', num(w) + 1) end
  return 'ok'
end

redis.register_function('streamshop_append_v2', append)
redis.register_function('streamshop_put_state_v2', put_state)

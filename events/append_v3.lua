#!lua name=streamshop_append_v3
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
  events   = [{s, k, f, c}]           stream KEYS[s]; aggregate state KEYS[k]; f the values of
                                      the entry's fields in order, seq left out (inserted here,
                                      after aggregate); c true: a compact entry (COMPACT, no
                                      "at"), else a full one (FULL); see events/codec.py
Returns JSON: {"ok": [entry ids]} | {"dup": stored} | {"err": kind, ...}.

This library holds streamshop_append_v3 alone. The library streamshop_v2 (append.lua) keeps
streamshop_append_v2, unchanged, for processes of the release before (full entries only; a
process of that release loads streamshop_v2 again and must not remove this function), and
streamshop_put_state_v2, used by both. Delete streamshop_append_v2 once none runs.

Every state hash an append writes gets its field "w" (writes) incremented: the rebuild of
the decision state (streamshop_put_state_v2, in append.lua) overwrites a hash only when "w" is
still what it read before folding the log, so a concurrent append always wins.
]]

local FULL = {'id', 'type', 'schema', 'aggregate', 'at', 'actor', 'correlation', 'causation',
  'source', 'data'}
local COMPACT = {'id', 'type', 'schema', 'aggregate', 'actor', 'correlation', 'causation',
  'source', 'data'}

local function xadd(stream, names, values, seq)
  local args = {}
  local n = 0
  for j, name in ipairs(names) do
    args[n + 1] = name
    args[n + 2] = values[j]
    n = n + 2
    if j == 4 then
      args[n + 1] = 'seq'
      args[n + 2] = seq
      n = n + 2
    end
  end
  return redis.call('XADD', stream, '*', unpack(args))
end

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
    ids[i] = xadd(keys[e.s], e.c and COMPACT or FULL, e.f, tostring(v))
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

redis.register_function('streamshop_append_v3', append)

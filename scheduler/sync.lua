-- Upsert monitor plans, guarded by revision (migrations/postgres/0005): a plan is written only
-- over an older revision and above the monitor's tombstone, so a slow reconcile can neither
-- roll a plan back nor bring a deleted monitor back. A monitor keeps its place in the
-- schedule unless it is new, its interval changed, or its due entry is gone (Redis lost it).
-- Atomic, so concurrent schedulers syncing agree.
-- KEYS[1] due ZSET, KEYS[2] plan HASH, KEYS[3] revisions HASH, KEYS[4] tombstones HASH,
-- KEYS[5] rules HASH (the evaluator's, engine.rules, written with the plan), KEYS[6] regions
-- SET (every region a plan names: the checks streams dispatch.lua declares, added with the plan),
-- KEYS[7] shapes HASH (digest -> shape, `#` digest -> how many plans name it)
-- ARGV[1] the number of shapes S, then S pairs (digest, shape): the shapes the plans name
-- (scheduler/plan.py), then quintuples (monitor id, plan, phase ms, revision, rules). A new
-- place in the schedule is the first slot on the monitor's grid (phase + k * interval) at or
-- after Redis time now.
-- A shape is kept in the shapes hash with the count of plans that name it; the last plan to
-- leave it (here or in remove.lua) deletes it, and a shape no written plan names is not kept.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local written = 0
local shapes = tonumber(ARGV[1])
for i = 2, 1 + 2 * shapes, 2 do
  redis.call('HSETNX', KEYS[7], ARGV[i], ARGV[i + 1])
end
-- A plan is `interval \0 regions \0 shape digest \0 ...`.
local function parsed(plan)
  local interval, regions, digest = string.match(plan, '^(%d+)%z([^%z]*)%z([^%z]*)')
  return tonumber(interval), regions, digest
end
local named, regions = {}, {}
for i = 2 + 2 * shapes, #ARGV, 5 do
  local id, plan, rev = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local interval, plan_regions, digest = parsed(plan)
  local first = string.format('%d', now + (tonumber(ARGV[i + 2]) - now) % interval)
  local have = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  -- A tombstone is `revision:deleted at ms`.
  local stone = redis.call('HGET', KEYS[4], id)
  local dead = tonumber(string.match(stone or '', '^(%d+)') or '0')
  local old = redis.call('HGET', KEYS[2], id)
  if rev > dead and (rev > have or (rev == have and not old)) then
    redis.call('HSET', KEYS[2], id, plan)
    redis.call('HSET', KEYS[3], id, ARGV[i + 3])
    redis.call('HSET', KEYS[5], id, ARGV[i + 4])
    if stone then redis.call('HDEL', KEYS[4], id) end
    regions[plan_regions] = true
    named[digest] = (named[digest] or 0) + 1
    local old_interval, _, old_digest = nil, nil, nil
    if old then
      old_interval, _, old_digest = parsed(old)
      named[old_digest] = (named[old_digest] or 0) - 1
    end
    if old_interval ~= interval or not redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[1], first, id)
    end
    written = written + 1
  elseif rev == have and not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], first, id)  -- the plan is current; its due entry was lost
    written = written + 1
  end
end
for digest, change in pairs(named) do
  if change ~= 0 and redis.call('HINCRBY', KEYS[7], '#' .. digest, change) <= 0 then
    redis.call('HDEL', KEYS[7], '#' .. digest, digest)
  end
end
for i = 2, 1 + 2 * shapes, 2 do
  if redis.call('HEXISTS', KEYS[7], '#' .. ARGV[i]) == 0 then
    redis.call('HDEL', KEYS[7], ARGV[i])
  end
end
for joined in pairs(regions) do
  for region in string.gmatch(joined, '[^,]+') do redis.call('SADD', KEYS[6], region) end
end
return written

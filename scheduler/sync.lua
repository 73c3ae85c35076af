-- Upsert monitor plans, guarded by revision (migrations/postgres/0005): a plan is written only
-- over an older revision and above the monitor's tombstone, so a slow reconcile can neither
-- roll a plan back nor bring a deleted monitor back. A monitor keeps its place in the
-- schedule unless it is new, its interval changed, or its due entry is gone (Redis lost it).
-- Atomic, so concurrent schedulers syncing agree.
-- KEYS[1] due ZSET, KEYS[2] plan HASH, KEYS[3] revisions HASH, KEYS[4] tombstones HASH,
-- KEYS[5] rules HASH (the evaluator's, engine.rules, written with the plan), KEYS[6] regions
-- SET (every region a plan names: the checks streams dispatch.lua declares, added with the plan)
-- ARGV: quintuples (monitor id, plan, phase ms, revision, rules). A new place in the schedule is
-- the first slot on the monitor's grid (phase + k * interval) at or after Redis time now.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local written = 0
-- A plan is `interval \0 region \0 template [\0 region \0 template ...]` (scheduler/plan.py).
local function add_regions(plan)
  local even = false
  for part in string.gmatch(plan, '%z([^%z]*)') do
    even = not even
    if even then redis.call('SADD', KEYS[6], part) end
  end
end
for i = 1, #ARGV, 5 do
  local id, plan, rev = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local interval = tonumber(string.match(plan, '^(%d+)%z'))
  local first = string.format('%d', now + (tonumber(ARGV[i + 2]) - now) % interval)
  local have = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  -- A tombstone is `revision:deleted at ms`.
  local dead = tonumber(string.match(redis.call('HGET', KEYS[4], id) or '', '^(%d+)') or '0')
  local old = redis.call('HGET', KEYS[2], id)
  if rev > dead and (rev > have or (rev == have and not old)) then
    redis.call('HSET', KEYS[2], id, plan)
    redis.call('HSET', KEYS[3], id, ARGV[i + 3])
    redis.call('HSET', KEYS[5], id, ARGV[i + 4])
    redis.call('HDEL', KEYS[4], id)
    add_regions(plan)
    -- A plan starts with its interval and a NUL (scheduler/plan.py).
    local same_interval = old and tonumber(string.match(old, '^(%d+)%z')) == interval
    if not same_interval or not redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[1], first, id)
    end
    written = written + 1
  elseif rev == have and not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], first, id)  -- the plan is current; its due entry was lost
    written = written + 1
  end
end
return written

-- Upsert monitor plans; a monitor keeps its place in the schedule unless it is new, was
-- removed, or its interval changed. Atomic, so concurrent schedulers syncing agree.
-- KEYS[1] due ZSET, KEYS[2] plan HASH
-- ARGV: triples of (monitor id, plan, first due ms)
for i = 1, #ARGV, 3 do
  local id, plan, first = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[2], id)
  redis.call('HSET', KEYS[2], id, plan)
  -- A plan starts with its interval and a NUL (scheduler/plan.py).
  local same_interval = old and string.match(old, '^(%d+)%z') == string.match(plan, '^(%d+)%z')
  if not same_interval or not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], first, id)
  end
end
return #ARGV / 3

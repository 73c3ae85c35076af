-- Take monitors out of the schedule and leave a tombstone: the revision removed (the one
-- deleted in Postgres, or what Redis held, whichever is newer) and when (Redis time), so an
-- upsert of that revision or an older one is refused (scheduler/sync.lua).
-- KEYS[1] due ZSET, KEYS[2] plan HASH, KEYS[3] revisions HASH, KEYS[4] tombstones HASH,
-- KEYS[5] rules HASH, KEYS[6] regions SET (not used here), KEYS[7] shapes HASH. A plan
-- leaves its shape's count (scheduler/sync.lua): the last one deletes the shape.
-- ARGV: pairs (monitor id, revision deleted or 0 when not known)
local now = redis.call('TIME')
local at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local rev = math.max(tonumber(ARGV[i + 1]), tonumber(redis.call('HGET', KEYS[3], id) or '0'))
  local plan = redis.call('HGET', KEYS[2], id)
  local digest = plan and string.match(plan, '^%d+%z[^%z]*%z([^%z]*)')
  if digest and redis.call('HINCRBY', KEYS[7], '#' .. digest, -1) <= 0 then
    redis.call('HDEL', KEYS[7], '#' .. digest, digest)
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HSET', KEYS[4], id, string.format('%d', rev) .. ':' .. at)
end
return #ARGV / 2

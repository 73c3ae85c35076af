-- Pop due monitors, XADD one check.due per region, re-add each at its next slot.
-- One script runs atomically in Redis, so two schedulers can never pop the same slot.
-- KEYS[1] due ZSET, KEYS[2] plan HASH, KEYS[3] stats HASH
-- ARGV[1] now (epoch ms), ARGV[2] max monitors per call, ARGV[3] checks stream key prefix
-- The event JSON matches engine.events.CheckDue; ids and regions are validated to need no escaping.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local prefix = ARGV[3]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local dispatched, skipped = 0, 0
for i = 1, #due, 2 do
  local id = due[i]
  local slot = tonumber(due[i + 1])
  local plan = redis.call('HGET', KEYS[2], id)
  if not plan then
    redis.call('ZREM', KEYS[1], id)
  else
    local interval, version, regions, spec = string.match(plan, '^(%d+)|(%d+)|([^|]*)|(.*)$')
    interval = tonumber(interval)
    -- Slots missed while no scheduler ran are skipped and counted, not replayed.
    local missed = math.floor((now - slot) / interval)
    if missed > 0 then
      skipped = skipped + missed
      slot = slot + missed * interval
    end
    local slot_s = string.format('%d', slot)
    local head = '","monitor_id":"' .. id .. '","region":"'
    local tail = '","scheduled_ms":' .. slot_s .. ',"deadline_ms":' ..
      string.format('%d', slot + interval) .. ',"spec_version":' .. version .. ',"spec":' .. spec .. '}'
    for region in string.gmatch(regions, '[^,]+') do
      redis.call('XADD', prefix .. region, '*', 'e',
        '{"v":1,"type":"check.due","check_id":"' .. id .. ':' .. region .. ':' .. slot_s ..
        head .. region .. tail)
      dispatched = dispatched + 1
    end
    redis.call('ZADD', KEYS[1], string.format('%d', slot + interval), id)
  end
end
if dispatched > 0 then redis.call('HINCRBY', KEYS[3], 'dispatched', dispatched) end
if skipped > 0 then redis.call('HINCRBY', KEYS[3], 'skipped', skipped) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {dispatched, skipped, #due / 2, head[2] or '-1'}

-- The one dead-letter entry shape, for every script that dead-letters (streams.DeadLetters
-- calls it alone, engine/complete.lua with its XACK). `at` is Redis server time.
local function dead_letter(key, maxlen, stream, id, reason, payload)
  local now = redis.call('TIME')
  local at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'stream', stream, 'id', id,
    'reason', reason, 'payload', payload, 'at', at)
end

-- The figures of every stream in KEYS in one call, at Redis time (engine.queue.stream_stats):
-- a script reads them all in Redis and answers one compact reply, where pipelining the same
-- commands cost the client more to parse than Redis to run. Read-only.
-- Returns {seconds, microseconds, streams}: per stream {length, first entry id, groups}, or
-- {} when it does not exist yet; per group {name, pending, lag (nil when Redis cannot count
-- it), the oldest unread entry's id (nil: none), consumers}; per consumer {name, pending,
-- idle ms}.
local function fields(flat)
  local m = {}
  for i = 1, #flat, 2 do
    m[flat[i]] = flat[i + 1]
  end
  return m
end

local streams = {}
for i, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok ~= 'stream' then
    streams[i] = {}
  else
    local info = fields(redis.call('XINFO', 'STREAM', key))
    local groups = {}
    for j, row in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local g = fields(row)
      -- The entry after the group's last delivered one: the oldest it has not read.
      local unread = redis.call('XRANGE', key, '(' .. g['last-delivered-id'], '+', 'COUNT', 1)[1]
      local consumers = {}
      for k, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, g['name'])) do
        local cf = fields(c)
        consumers[k] = {cf['name'], cf['pending'], cf['idle']}
      end
      groups[j] = {g['name'], g['pending'], g['lag'], unread and unread[1] or false, consumers}
    end
    local first = info['first-entry']
    streams[i] = {info['length'], first and first[1] or false, groups}
  end
end
local now = redis.call('TIME')
return {now[1], now[2], streams}

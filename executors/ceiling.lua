-- Take up to ARGV[3] tokens of the checks-per-minute ceiling (executors.ceiling): a bucket of
-- ARGV[2] tokens that refills at ARGV[1] tokens a minute of Redis time, shared by every
-- executor. One script, so two executors never both take the last token. A token is 60000
-- units and each ms adds ARGV[1] units: the refill is integer arithmetic, without drift.
-- Returns {tokens granted, ms until the next token when fewer than asked were granted}.
local per_minute = tonumber(ARGV[1])
local full = tonumber(ARGV[2]) * 60000
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'units', 'at')
local units, at = tonumber(state[1]), tonumber(state[2])
if units == nil or at == nil then
  units, at = full, now
elseif now > at then
  units = units + (now - at) * per_minute
  at = now
end
-- (A server clock that went back refills nothing until it passes `at` again.) A peer with a
-- larger ceiling may have left more than this bucket holds.
units = math.min(units, full)
local granted = math.min(want, math.floor(units / 60000))
units = units - granted * 60000
redis.call('HSET', KEYS[1], 'units', units, 'at', at)
-- Full again, it reads the same as a missing bucket: the key goes then.
redis.call('PEXPIRE', KEYS[1], math.ceil((full - units) / per_minute) + 1000)
local wait = 0
if granted < want then
  wait = math.ceil((60000 - units) / per_minute)
end
return {granted, wait}

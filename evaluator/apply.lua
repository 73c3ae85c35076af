-- Apply evaluations: each one's new state, its events and its index updates, in one atomic
-- step with the XACK of the result that caused it, and only over the state it was computed
-- from. So a result is evaluated once (a redelivery finds its entry acknowledged), a
-- transition's event is written exactly once with its state, and two evaluators moving one
-- monitor at once cannot both win: the second finds another revision, writes nothing and
-- computes again from what the first wrote (evaluator.service).
-- KEYS[1] results stream, KEYS[2] events stream, KEYS[3] stale ZSET, KEYS[4] retries ZSET,
-- KEYS[5...] the state keys of the monitors evaluated
-- ARGV[1] group, ARGV[2] the event field name, then sextuples: (entry id or '' for an
-- evaluation by time, index of the state key in KEYS, the revision it was computed from,
-- the new state `revision:json`, the events' JSON joined by newlines (orjson escapes every
-- newline in a string), stale and retry updates as lines `S|R member score`, score '-' to
-- remove). Returns per evaluation 1 applied, 0 its result was evaluated before, -1 the state
-- moved (compute again).
local codes = {}
for i = 3, #ARGV, 6 do
  local entry, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  local current = redis.call('GET', key)
  local rev = current and tonumber(string.match(current, '^(%d+):')) or 0
  if rev ~= tonumber(ARGV[i + 2]) then
    codes[#codes + 1] = -1
  elseif entry ~= '' and redis.call('XACK', KEYS[1], ARGV[1], entry) == 0 then
    codes[#codes + 1] = 0
  else
    redis.call('SET', key, ARGV[i + 3])
    for event in string.gmatch(ARGV[i + 4], '[^\n]+') do
      redis.call('XADD', KEYS[2], '*', ARGV[2], event)
    end
    for which, member, score in string.gmatch(ARGV[i + 5], '([SR]) (%S+) (%S+)') do
      local zset = which == 'S' and KEYS[3] or KEYS[4]
      if score == '-' then
        redis.call('ZREM', zset, member)
      else
        redis.call('ZADD', zset, score, member)
      end
    end
    codes[#codes + 1] = 1
  end
end
return codes

-- Acknowledge checks and write their results in one atomic step: a result is written only
-- by the call whose XACK removed the entry from the pending list, so a check run twice (a
-- slow executor and the peer that claimed its entry) still yields exactly one result.
-- KEYS[1] checks stream, KEYS[2] results stream, KEYS[3] dead-letter stream
-- ARGV[1] group, ARGV[2] dead-letter MAXLEN, then triples (entry id, result json, dead-letter
-- reason or '')
local written = 0
for i = 3, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[i + 1])
    if ARGV[i + 2] ~= '' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'stream', KEYS[1], 'id', ARGV[i],
        'reason', ARGV[i + 2], 'payload', ARGV[i + 1])
    end
    written = written + 1
  end
end
return written

-- Acknowledge checks and write their results in one atomic step: a result is written only
-- by the call whose XACK removed the entry from the pending list, so a check run twice (a
-- slow executor and the peer that claimed its entry) still yields exactly one result.
-- Runs after engine/deadletter.lua, which defines dead_letter() (streams.Completions).
-- KEYS[1] checks stream, KEYS[2] results stream, KEYS[3] dead-letter stream
-- ARGV[1] group, ARGV[2] dead-letter MAXLEN, ARGV[3] the event field name, then quadruples
-- (entry id, result json, dead-letter reason or '', the entry's own event when dead-lettered)
local written = 0
for i = 4, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[i + 1])
    if ARGV[i + 2] ~= '' then
      dead_letter(KEYS[3], ARGV[2], KEYS[1], ARGV[i], ARGV[i + 2], ARGV[i + 3])
    end
    written = written + 1
  end
end
return written

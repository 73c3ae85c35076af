-- Keep entries this consumer still holds: reset their idle time (XCLAIM ... JUSTID, which
-- leaves the delivery count alone) so no claim sweep takes work in progress, but only for
-- the entries it still owns: one a peer has claimed meanwhile stays the peer's.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, then entry ids. Returns the ids kept.
local kept = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept

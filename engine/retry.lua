-- Put dead letters back on the stream they came from, each removed in the same step: one
-- script runs atomically, so a crash or a second retry at the same time can neither send one
-- twice nor lose it. The new entry carries the event as it was; the stream's groups read it
-- as any other. A dead letter gone already (retried or purged meanwhile), or from another
-- stream than KEYS[2], is left alone.
-- KEYS[1] dead-letter stream, KEYS[2] the stream the dead letters came from
-- ARGV[1] the event field name, then dead-letter ids. Returns how many were put back.
local done = 0
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    local f = {}
    for j = 1, #entry[2], 2 do
      f[entry[2][j]] = entry[2][j + 1]
    end
    if f.stream == KEYS[2] then
      redis.call('XADD', KEYS[2], '*', ARGV[1], f.payload or '')
      redis.call('XDEL', KEYS[1], ARGV[i])
      done = done + 1
    end
  end
end
return done

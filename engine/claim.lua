-- Claim entries idle at least ARGV[3] ms from any consumer but the spared ones (live peers:
-- their work in progress stays theirs however long its result waits) and hand back the
-- claimer's own idle entries, paging through the group's pending list by id. The delivery count comes from the same XPENDING row, so a
-- claimed entry carries its real count whatever the claimer holds itself.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] claimer, ARGV[3] min idle ms, ARGV[4] how many to
-- claim, ARGV[5] how many pending rows to look at, at most, then the spared consumers.
-- Returns {entry id, fields (false once trimmed), deliveries} per claimed entry; an error
-- reply (NOGROUP) when the group is gone.
local spared = {}
for i = 6, #ARGV do
  spared[ARGV[i]] = true
end
local want, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local claimed, start = {}, '-'
while #claimed < want and budget > 0 do
  local rows = redis.pcall('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+',
                           math.min(budget, 100))
  if rows.err then
    return rows
  end
  if #rows == 0 then
    break
  end
  budget = budget - #rows
  for _, row in ipairs(rows) do
    if #claimed >= want then
      break
    end
    if row[2] == ARGV[2] then
      -- The claimer's own idle entry: one it holds (the caller skips it) or one whose
      -- delivery never reached it (Redis went away before the reply). Its idle time is reset
      -- and its count kept: no new delivery.
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], row[1], 'JUSTID')
      local entry = redis.call('XRANGE', KEYS[1], row[1], row[1])[1]
      claimed[#claimed + 1] = {row[1], entry and entry[2] or false, row[4]}
    elseif not spared[row[2]] then
      -- A trimmed entry: Redis 6.2 claims it and returns nil (false here), Redis 7 drops it
      -- from the pending list and returns nothing.
      local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], row[1])
      if #got == 1 then
        claimed[#claimed + 1] = {row[1], got[1] and got[1][2], row[4] + 1}
      end
    end
  end
  start = '(' .. rows[#rows][1]
end
return claimed

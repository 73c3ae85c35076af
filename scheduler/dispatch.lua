-- Pop due monitors, XADD one check.due per region, re-add each at its next slot.
-- One script runs atomically in Redis, so two schedulers can never pop the same slot.
-- Now is Redis server time (TIME), whatever the caller's clock says: a scheduler on a host
-- whose clock runs fast can never dispatch a slot early.
-- KEYS[1] due ZSET, KEYS[2] plan HASH, KEYS[3] stats HASH, KEYS[4] maintenance HASH,
-- KEYS[5] retries ZSET, KEYS[6] paused HASH, KEYS[7] shapes HASH, KEYS[8...] the checks streams
-- of the regions
-- ARGV[3...] (engine.keys: every key a script touches is declared, for Redis Cluster).
-- ARGV[1] max monitors per call, ARGV[2] the event field name.
-- Returns {dispatched, skipped, due popped, next due ms or -1, now ms (with microseconds as
-- a fraction), held, regions}: `regions` lists the regions a due plan names whose stream is not
-- declared; when there are any, the script has changed nothing, and the caller calls again
-- with their streams declared.
-- A plan (scheduler/plan.py) is `interval \0 regions \0 shape digest \0 version \0 strings...`;
-- its shape (the shapes hash's field digest) is the whole check.due with \1 where the
-- slot goes, \2 the deadline, \3 the maintenance flag, \4 the monitor id, \5 the region, \6
-- the version and \7 the plan's strings, one after the other: this script fills in those and
-- nothing else. A plan whose shape is gone (Redis lost it) is sent nothing, like no plan.
-- A monitor in a maintenance window (`mode:end ms`, kept by scheduler/maintenance.py) that
-- has not ended: `pause` sends nothing and counts each check `paused`; `mute` sends the
-- checks with "maintenance": true. Either way the slot advances as it would.
-- Retries (the evaluator asks for them: retry_interval) are `monitor id|region` due at their
-- own time: that region's template rendered at that time (so its check id, monitor:region:
-- time, is no slot's) with the monitor's next slot as its deadline, counted as dispatched
-- like a slot and `retried` besides. None is sent for a monitor gone or paused.
-- Dispatch paused by an operator (engine.queue: region -> since, `*` for every region): a
-- paused region is sent nothing, neither slot nor retry, and each check it is not sent is
-- counted `held`; the slot advances as it would, so a resume starts at the next slot with no
-- burst of the missed ones.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local limit = tonumber(ARGV[1])
local field = ARGV[2]
local streams = {}
for i = 3, #ARGV do
  streams[ARGV[i]] = KEYS[i + 5]
end

local function split(text, sep)
  local parts, start = {}, 1
  while true do
    local stop = string.find(text, sep, start, true)
    if not stop then
      parts[#parts + 1] = string.sub(text, start)
      return parts
    end
    parts[#parts + 1] = string.sub(text, start, stop - 1)
    start = stop + 1
  end
end

-- A shape cut at its marks, once per call: literal text at odd places, the mark's byte at
-- even ones (a shape ends with text, maybe empty).
local function pieces(shape)
  local out, start = {}, 1
  while true do
    local at = string.find(shape, '[\1-\7]', start)
    if not at then
      out[#out + 1] = string.sub(shape, start)
      return out
    end
    out[#out + 1] = string.sub(shape, start, at - 1)
    out[#out + 1] = string.byte(shape, at)
    start = at + 1
  end
end

-- A plan as {interval, regions, pieces, version, strings}; nil when it or its shape is gone.
local shapes = {}
local function read_plan(id)
  local text = redis.call('HGET', KEYS[2], id)
  if not text then return nil end
  local parts = split(text, '\0')
  local digest = parts[3]
  if shapes[digest] == nil then
    local shape = redis.call('HGET', KEYS[7], digest)
    shapes[digest] = shape and pieces(shape) or false
  end
  if not shapes[digest] then return nil end
  local strings = {}
  for j = 5, #parts do strings[#strings + 1] = parts[j] end
  return {interval = tonumber(parts[1]), regions = split(parts[2], ','),
          pieces = shapes[digest], version = parts[4], strings = strings}
end

-- One check.due: the shape's pieces with every mark filled in (\7: the plan's next string).
local function render(id, plan, region, slot, deadline, mode)
  local values = {string.format('%d', slot), string.format('%d', deadline),
                  mode == 'mute' and 'true' or 'false', id, region, plan.version}
  local out, cut, n = {}, plan.pieces, 0
  for i = 1, #cut - 1, 2 do
    out[i] = cut[i]
    local mark = cut[i + 1]
    if mark == 7 then
      n = n + 1
      out[i + 1] = plan.strings[n]
    else
      out[i + 1] = values[mark]
    end
  end
  out[#cut] = cut[#cut]
  return table.concat(out)
end

-- The window a monitor is in now: 'pause', 'mute' or nil. An entry past its end (the
-- scheduler that kept it stopped) is no window any more.
local function window(id)
  local mode, finish = string.match(redis.call('HGET', KEYS[4], id) or '', '^(%a+):(%d+)$')
  if not finish or tonumber(finish) <= now then return nil end
  return mode
end

local paused_regions = {}
local flat = redis.call('HGETALL', KEYS[6])
for i = 1, #flat, 2 do
  paused_regions[flat[i]] = true
end
local function held(region)
  return paused_regions['*'] or paused_regions[region]
end
local held_count = 0

local function head_of()
  local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  local retry_head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')[2]
  if retry_head and (not head or tonumber(retry_head) < tonumber(head)) then head = retry_head end
  return head or '-1'
end
local now_text = string.format('%d.%03d', now, tonumber(time[2]) % 1000)

-- Every plan due is read first: one naming an undeclared stream stops the call unchanged.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local retries = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                          limit)
local plans, undeclared, missing = {}, {}, {}
local function check(id)
  if plans[id] ~= nil then return end
  plans[id] = read_plan(id) or false
  if not plans[id] then return end
  for _, region in ipairs(plans[id].regions) do
    if not streams[region] and not undeclared[region] then
      undeclared[region] = true
      missing[#missing + 1] = region
    end
  end
end
for i = 1, #due, 2 do check(due[i]) end
for i = 1, #retries, 2 do
  local id = string.match(retries[i], '^(.*)|.*$')
  if id then check(id) end
end
if #missing > 0 then
  return {0, 0, 0, head_of(), now_text, 0, missing}
end

local dispatched, skipped, paused = 0, 0, 0
for i = 1, #due, 2 do
  local id = due[i]
  local slot = tonumber(due[i + 1])
  local plan = plans[id]
  if not plan then
    redis.call('ZREM', KEYS[1], id)
  else
    local interval = plan.interval
    -- Slots missed while no scheduler ran are skipped and counted, not replayed.
    local missed = math.floor((now - slot) / interval)
    if missed > 0 then
      skipped = skipped + missed
      slot = slot + missed * interval
    end
    local mode = window(id)
    if mode == 'pause' then
      paused = paused + #plan.regions
    else
      for _, region in ipairs(plan.regions) do
        if held(region) then
          held_count = held_count + 1
        else
          redis.call('XADD', streams[region], '*', field,
                     render(id, plan, region, slot, slot + interval, mode))
          dispatched = dispatched + 1
        end
      end
    end
    redis.call('ZADD', KEYS[1], string.format('%d', slot + interval), id)
  end
end
local retried = 0
for i = 1, #retries, 2 do
  redis.call('ZREM', KEYS[5], retries[i])
  local id, region = string.match(retries[i], '^(.*)|(.*)$')
  local plan = id and plans[id]
  local mode = plan and window(id)
  if plan and mode ~= 'pause' then
    local at = tonumber(retries[i + 1])
    local next_slot = tonumber(redis.call('ZSCORE', KEYS[1], id) or at + plan.interval)
    for _, name in ipairs(plan.regions) do
      if name == region and held(region) then
        held_count = held_count + 1
      elseif name == region then
        redis.call('XADD', streams[region], '*', field,
                   render(id, plan, region, at, math.max(next_slot, at + 1), mode))
        dispatched = dispatched + 1
        retried = retried + 1
      end
    end
  end
end
if dispatched > 0 then redis.call('HINCRBY', KEYS[3], 'dispatched', dispatched) end
if retried > 0 then redis.call('HINCRBY', KEYS[3], 'retried', retried) end
if skipped > 0 then redis.call('HINCRBY', KEYS[3], 'skipped', skipped) end
if paused > 0 then redis.call('HINCRBY', KEYS[3], 'paused', paused) end
if held_count > 0 then redis.call('HINCRBY', KEYS[3], 'held', held_count) end
return {dispatched, skipped, math.max(#due, #retries) / 2, head_of(), now_text, held_count, {}}

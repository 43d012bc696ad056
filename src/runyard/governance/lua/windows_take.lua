-- The request and token windows of runyard.governance.redis_windows, checked and taken at once.
-- KEYS: 1 rpm, 2 tpm, 3 tpm:used. ARGV: 1 the call's id, 2 rpm (0: none), 3 tpm (0: none),
-- 4 tokens, 5 window ms -> 0 when taken (or taken already, by this id), else ms until there may be room

local id, rpm, tpm, cost, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens = tpm > 0 and cost > 0
if (rpm > 0 and redis.call('ZSCORE', KEYS[1], id)) or (tokens and redis.call('ZSCORE', KEYS[2], id .. ':' .. cost)) then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local since = now - window
local wait = 0
local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end

if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local leaving = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    wait = tonumber(leaving[2]) + window - now
  end
end

local used = 0
if tokens then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since)
  local counted = redis.call('GET', KEYS[3])
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since) end
  if counted then
    used = tonumber(counted)
    for _, member in ipairs(gone) do used = used - cost_of(member) end
  else
    for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do used = used + cost_of(member) end
  end
  if redis.call('ZCARD', KEYS[2]) == 0 then used = 0 end
  redis.call('SET', KEYS[3], used, 'PX', window)
  if used + cost > tpm then
    local need, start, found = used + cost - tpm, 0, false
    while not found do
      local batch = redis.call('ZRANGE', KEYS[2], start, start + 99, 'WITHSCORES')
      if #batch == 0 then break end
      for i = 1, #batch, 2 do
        need = need - cost_of(batch[i])
        if need <= 0 then
          wait = math.max(wait, tonumber(batch[i + 1]) + window - now)
          found = true
          break
        end
      end
      start = start + 100
    end
    if not found then wait = window end
  end
end

if wait > 0 then return wait end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if tokens then
  redis.call('ZADD', KEYS[2], now, id .. ':' .. cost)
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('SET', KEYS[3], used + cost, 'PX', window)
end
return 0

-- The start of every script of runyard.governance.redis_semaphore (each is this prelude + its own).
-- KEYS: 1 permits, 2 waiters, 3 owners, 4 held, 5 served, 6 turn (under {prefix}limits:{name}:).
-- ARGV: 1 the limit's key prefix, 2 the inboxes' key prefix, 3 capacity, 4 lease ms,
-- 5 claim ms (a waiter's registration, and a permit granted to a waiter until it claims it),
-- 6 idle ms (keys untouched this long expire); then each script's own.

local permits, waiters, owners, held, served, turn = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local base, inboxes = ARGV[1], ARGV[2]
local capacity, lease, claim, idle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function owner_of(member)
  return string.sub(member, string.find(member, '|', 1, true) + 1)
end

local function line_of(owner)
  return base .. 'line:' .. owner
end

-- waiting owners are scored so that the lowest goes next: fewest held, then least recently
-- served (never: 0); equal scores go in owner order
local function rescore(owner)
  if redis.call('ZSCORE', owners, owner) then
    local h = tonumber(redis.call('HGET', held, owner) or 0)
    redis.call('ZADD', owners, h * 1099511627776 + tonumber(redis.call('HGET', served, owner) or 0), owner)
  end
end

local function forget_if_idle(owner)
  if redis.call('HEXISTS', held, owner) == 0 and redis.call('EXISTS', line_of(owner)) == 0 then
    redis.call('HDEL', served, owner)
  end
end

local function held_one_fewer(owner)
  if redis.call('HINCRBY', held, owner, -1) <= 0 then
    redis.call('HDEL', held, owner)
    forget_if_idle(owner)
  end
  rescore(owner)
end

local function purge()
  local ended = redis.call('ZRANGEBYSCORE', permits, '-inf', now)
  if #ended > 0 then
    for _, member in ipairs(ended) do held_one_fewer(owner_of(member)) end
    redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
  end
  -- a dropped waiter's entry in its line is skipped when reached
  redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now)
end

local function grant(member, owner, expiry)
  redis.call('ZREM', waiters, member)
  redis.call('ZADD', permits, expiry, member)
  redis.call('HINCRBY', held, owner, 1)
  redis.call('HSET', served, owner, redis.call('INCR', turn))
  rescore(owner)
end

local function queue(member, owner)
  local line = line_of(owner)
  redis.call('RPUSH', line, member)
  redis.call('PEXPIRE', line, idle)
  if not redis.call('ZSCORE', owners, owner) then
    redis.call('ZADD', owners, 0, owner)
    rescore(owner)
  end
end

local function dispatch(caller)
  local free = capacity - redis.call('ZCARD', permits)
  while free > 0 do
    local next_owner = redis.call('ZRANGE', owners, 0, 0)
    if #next_owner == 0 then return end
    local owner = next_owner[1]
    local line = line_of(owner)
    local member = redis.call('LPOP', line)
    while member and not redis.call('ZSCORE', waiters, member) do
      member = redis.call('LPOP', line)
    end
    if redis.call('EXISTS', line) == 0 then redis.call('ZREM', owners, owner) end
    if member then
      grant(member, owner, now + claim)
      free = free - 1
      if member ~= caller then
        local inbox = inboxes .. string.sub(member, 1, string.find(member, '/', 1, true) - 1)
        redis.call('RPUSH', inbox, member)
        redis.call('PEXPIRE', inbox, idle)
      end
    else
      forget_if_idle(owner)
    end
  end
end

local function touch()
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, idle) end
end

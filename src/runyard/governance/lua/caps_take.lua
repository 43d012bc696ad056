-- runyard.governance.redis_caps. KEYS: each take's key's leases (a sorted set: member -> lease end, ms,
-- Redis's clock); ARGV 1 capacity, 2 lease ms, then each take's member, in the order of KEYS
-- -> {1 if taken else 0, leases held then} per take, flat. Takes of one key count each other in turn.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local capacity, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local answers = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held >= capacity then
    answers[#answers + 1] = 0
    answers[#answers + 1] = held
  else
    redis.call('ZADD', key, now + lease, ARGV[i + 2])
    redis.call('PEXPIRE', key, lease)
    answers[#answers + 1] = 1
    answers[#answers + 1] = held + 1
  end
end
return answers

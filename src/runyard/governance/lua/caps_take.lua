-- runyard.governance.redis_caps. KEYS: 1 the key's leases (a sorted set: member -> lease end, ms, Redis's clock)
-- ARGV 1 capacity, 2 lease ms, 3 member -> {1 if taken else 0, leases held then}

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[1]) then return {0, held} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, held + 1}

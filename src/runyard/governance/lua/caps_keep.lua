-- runyard.governance.redis_caps. KEYS: the sets of this process's leases, one per lease (repeats allowed)
-- ARGV 1 lease ms, then the members, in the order of KEYS -> the number renewed
-- A lease that ended (or was never written: taken while Redis was away) is written again: the
-- stream it counts is still open, so the count is right again once this runs.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS

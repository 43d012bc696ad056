-- runyard.governance.redis_breaker. KEYS: 1 failures, 2 tripped, 3 cooling, 4 probe
-- ARGV 1 token, 2 probe ms -> {0, failures}: closed; {1, 0}: the probe; {-1, ms}: open for about ms more

if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0, tonumber(redis.call('GET', KEYS[1]) or 0)}
end
local cooling = redis.call('PTTL', KEYS[3])
if cooling > 0 then return {-1, cooling} end
if redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} end
return {-1, math.max(0, redis.call('PTTL', KEYS[4]))}

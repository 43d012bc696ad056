-- runyard.governance.redis_breaker. KEYS: 1 failures, 2 tripped, 3 cooling, 4 probe
-- ARGV 1 token, 2 probe (1/0), 3 failures allowed, 4 reset ms -> 1 if the breaker is open now

if redis.call('EXISTS', KEYS[2]) == 1 then
  if ARGV[2] == '1' then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
    if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
  end
  return 1
end
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
if failures >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], '1')
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
  redis.call('DEL', KEYS[1], KEYS[4])
  return 1
end
return 0

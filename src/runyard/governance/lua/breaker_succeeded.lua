-- runyard.governance.redis_breaker. KEYS: 1 failures, 2 tripped, 3 cooling, 4 probe
-- ARGV 1 probe (1/0) -> 1 if the breaker is still open

if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('DEL', KEYS[1])
return 0

-- runyard.governance.redis_breaker. KEYS: 1 failures, 2 tripped, 3 cooling, 4 probe
-- ARGV 1 token: a cancelled probe frees the slot at once

if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return 0

-- ARGV 7 member, 8 owner -> {lease ms if granted (and claimed) else 0, waiters}

purge()
local member, owner = ARGV[7], ARGV[8]
if not redis.call('ZSCORE', permits, member) then
  if redis.call('ZSCORE', waiters, member) then
    redis.call('ZADD', waiters, now + claim, member)
  elseif redis.call('ZCARD', waiters) == 0 and redis.call('ZCARD', permits) < capacity then
    grant(member, owner, now + lease)
  else
    redis.call('ZADD', waiters, now + claim, member)
    queue(member, owner)
  end
  dispatch(member)
end
local waiting = redis.call('ZCARD', waiters)
touch()
if redis.call('ZSCORE', permits, member) then
  redis.call('ZADD', permits, now + lease, member)
  return {lease, waiting}
end
return {0, waiting}

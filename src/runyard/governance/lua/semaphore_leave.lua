-- ARGV 7 member, 8 owner -> waiters. Gives back a permit, or leaves the line.

purge()
local member, owner = ARGV[7], ARGV[8]
if redis.call('ZREM', permits, member) == 1 then
  held_one_fewer(owner)
elseif redis.call('ZREM', waiters, member) == 1 then
  local line = line_of(owner)
  redis.call('LREM', line, 1, member)
  if redis.call('EXISTS', line) == 0 then
    redis.call('ZREM', owners, owner)
    forget_if_idle(owner)
  end
end
dispatch('')
touch()
return redis.call('ZCARD', waiters)
